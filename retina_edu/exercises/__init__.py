"""The checks behind the notebooks' exercises, one module per notebook topic.

Each exercise in a notebook is an answer cell (a function or a value to fill in; the instructor
edition holds the solution between ``### BEGIN SOLUTION`` and ``### END SOLUTION``) followed by a
locked check cell that calls one function here, e.g. ``ex.check_gamma_1000(gamma_1000)``. The
reference answer is computed here, from the package, never in a cell the student sees, and a wrong
answer gets a message that says what is wrong without giving the answer. :mod:`._check` says how
"not attempted", "wrong" and "correct" are reported, under nbgrader and without it.

============  ==============================
module        notebook
============  ==============================
``data``      00 setup and data
``anchors``   01 boxes and anchors
``matching``  02 matching and box coding
``focal``     03 focal loss
``loss``      04 the RetinaNet loss
``network``   05 backbone and FPN
``subnets``   06 subnets and the prior
``inference`` 07 inference
``training``  08 training
``evaluation`` 09 evaluation
``ablations`` 10 ablations
``realdata``  11 real images: tree crowns
============  ==============================
"""

from ._check import NotAttempted, grading

__all__ = ["NotAttempted", "grading"]
