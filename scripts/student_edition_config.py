"""nbconvert configuration of scripts/student-edition.sh: nbgrader's two clearing steps."""

c = get_config()  # noqa: F821 (traitlets' config files get it from their loader)
c.NotebookExporter.preprocessors = [
    "nbgrader.preprocessors.ClearSolutions",
    "nbgrader.preprocessors.ClearHiddenTests",
]
# a solution region becomes nothing: the student's "answer = ..." line above it stays, and a
# function whose body is a solution keeps its docstring (a valid, empty body)
c.ClearSolutions.code_stub = {"python": ""}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
# the course uses nbgrader's markers without its database, so cells carry no nbgrader metadata
c.ClearSolutions.enforce_metadata = False
c.ClearHiddenTests.enforce_metadata = False
