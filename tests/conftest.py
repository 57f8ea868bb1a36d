"""Shared fixtures: ``impl`` runs a test on the compiled core and on the reference model."""

import os

import pytest
from hypothesis import HealthCheck, settings

import dmaphys
import dmaphys.reference as reference

settings.register_profile("ci", max_examples=150, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(params=["core", "reference"])
def impl(request):
    """The module under test: dmaphys (compiled core) or dmaphys.reference."""
    return dmaphys if request.param == "core" else reference
