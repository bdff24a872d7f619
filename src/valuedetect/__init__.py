"""valuedetect: find the human values behind arguments (Touche23-ValueEval, SemEval-2023 Task 4)."""

__version__ = "0.1.0"
