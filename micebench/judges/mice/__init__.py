"""The MICE-Bench judge (``mice``): IF, CC and GA as PROTOCOL.md defines them.

Modules: ``grammar`` (formatted instructions), ``if_rules`` (one rule per task type), ``cc``,
``ga``, ``prompts`` (templates under ``judges/prompts``), ``cache`` (finished votes), ``judge``.
"""
