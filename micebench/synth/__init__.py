"""The synthetic suite: procedurally drawn scenes with exact ground truth, the ``scene`` judge, probe
editors and judge validation. See docs/synthetic.md."""
