"""Exercises: write a gradient rule yourself, and have it graded (``python -m tinygrad_gpt exercise``).

``catalog.py`` lists the exercises in the docs' order, ``cases.py`` draws their inputs,
``templates.py`` holds the workbooks, ``grader.py`` grades a Function rule in three steps
(forward values, each input's gradient, a tiny GPT trained with it), ``special.py`` grades the
three that are not one Function (the backward loop, ``sum_to`` and AdamW), and ``diagnose.py``
names the likely mistake. docs/13-exercises.md explains how to work through them.
"""
