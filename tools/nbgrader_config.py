# nbgrader settings for retina-edu (tools/editions.py copies this file into the course folder it builds).
# To run the course with nbgrader yourself, copy it into your nbgrader course folder.
c = get_config()  # noqa: F821 (provided by nbgrader when it loads this file)

# The course's solutions sit between "### BEGIN SOLUTION" and "### END SOLUTION" in the exercise cells.
# A stub is a comment only, so the student edition runs top to bottom: an unwritten function returns
# None and an unanswered value keeps the None written above it, and the check reports "not attempted yet".
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Notebook 08 trains for minutes and 10 for longer: nbgrader's default cell timeout (30 s) is too short.
c.Execute.timeout = 1800
