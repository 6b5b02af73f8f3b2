"""Model backends of the judges: an open-vocabulary detector, patch features, a VLM.

Each backend is a small interface (a ``typing.Protocol``) plus implementations. Judges depend
only on the interfaces, so tests inject hand-made fakes and users swap implementations.
Heavy packages (torch, transformers) are imported inside the implementations only.
"""
