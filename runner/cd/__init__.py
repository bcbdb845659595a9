"""Consistency distillation on a 1-D Burgers surrogate: data, EDM teacher, CD student, evaluation."""
