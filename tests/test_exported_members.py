"""The public surface is exactly what ``__all__`` says, and says ``batchpage.X``."""

import batchpage


def test_all_is_sorted_and_complete() -> None:
    """Every public name is exported, sorted, and nothing private leaks."""
    exported = set(batchpage.__all__)
    public = {n for n in dir(batchpage) if not n.startswith("_")} - {"contrib"}
    assert exported == public
    assert batchpage.__all__ == sorted(batchpage.__all__, key=lambda n: (not n.isupper(), n))


def test_exported_classes_report_the_package_module() -> None:
    """Reprs and docs show ``batchpage.Section``, not the private module."""
    for name in batchpage.__all__:
        obj = getattr(batchpage, name)
        if isinstance(obj, type):
            assert obj.__module__ == "batchpage", name


def test_core_imports_no_web_framework_or_driver() -> None:
    """Importing the core pulls in neither FastAPI, Django, pymongo nor redis."""
    import subprocess
    import sys

    code = (
        "import sys, batchpage; "
        "bad = [m for m in ('fastapi','django','starlette','pymongo','redis') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
