"""Every test session shares one local control plane (started on first use)."""

# hypothesis's pytest plugin imports hypothesis in its terminal summary when no test did; that
# import runs through pytest's assertion rewriter deep in the stack, where CPython 3.11.7's
# ast.parse can fail ("AST constructor recursion depth mismatch", fixed in 3.11.8). Imported
# here, at the top of the stack, it is already loaded then.
import hypothesis  # noqa: F401

pytest_plugins = ["devserver_harness.pytest_plugin"]
