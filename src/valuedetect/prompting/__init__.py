"""Prompting frozen language models (the paper's Exp-II): label-word scoring of prompt templates."""
