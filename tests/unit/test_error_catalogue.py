"""One catalogue of error codes: every public code is a PinholeError class in
pinhole/errors.py, the README lists exactly those, and no other module defines one."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

from pinhole import errors
from pinhole.errors import PinholeError, catalogue, for_status
from tests.support.layout import product_packages

README = Path(__file__).resolve().parents[2] / "README.md"
PACKAGES = product_packages()


def readme_codes() -> set[str]:
    text = README.read_text()
    start = text.index("The codes are stable")
    paragraph = text[start : text.index("\n\n", start)]
    return set(re.findall(r"`([a-z][a-z0-9-]+)`", paragraph)) - {"no-store"}


def _all_modules() -> list[str]:
    names = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        names.append(package)
        for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}."):
            names.append(info.name)
    return names


def test_the_readme_lists_exactly_the_catalogue() -> None:
    assert readme_codes() == set(catalogue())


def test_codes_are_kebab_case_and_statuses_are_errors() -> None:
    for code, cls in catalogue().items():
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", code), code
        assert 400 <= cls.status < 600, (code, cls.status)
        assert cls.__module__ == "pinhole.errors", (code, cls.__module__)


def test_no_module_outside_the_catalogue_defines_an_error_class() -> None:
    for name in _all_modules():
        importlib.import_module(name)
    outside = [
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in _subclasses(PinholeError)
        if cls.__module__ != errors.__name__
    ]
    assert outside == []


def _subclasses(cls: type[PinholeError]) -> list[type[PinholeError]]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_subclasses(sub))
    return found


@pytest.mark.parametrize(
    ("status", "code"),
    [(404, "not-found"), (405, "method-not-allowed"), (414, "uri-too-long"), (409, "http-error")],
)
def test_a_bare_http_status_maps_to_its_plain_code(status: int, code: str) -> None:
    assert for_status(status).code == code
