"""Answers, tables and figures: what the steps found, the scheduler comparison, index.html, the column dictionary."""
