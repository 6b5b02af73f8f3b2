"""Judges: adapters that score stored turns (IF, CC, GA and friends)."""

from micebench.judges.base import Judge, JudgeConfig, create_judge

__all__ = ["Judge", "JudgeConfig", "create_judge"]
