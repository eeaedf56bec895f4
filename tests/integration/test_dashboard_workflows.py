"""The dashboard's job page of a workflow: the last step's page lists every step with its
state, and a step's page links to its workflow."""

from __future__ import annotations

import pytest

from offload import chain, group
from offload.stores.base import Workflows
from tests.integration.test_dashboard import Dash
from tests.integration.test_dashboard import dash as dash  # the fixture, used by name


async def test_a_workflow_page_lists_its_steps(dash: Dash) -> None:
    if not isinstance(dash.jobs.store, Workflows):
        pytest.skip(f"{type(dash.jobs.store).__name__} keeps no workflows")
    handle = await chain(dash.ok.s("a"), group(dash.ok.si("b"), dash.boom.si("<x>"))).enqueue()
    page = (await dash.page(f"/jobs/{handle.id}")).text
    assert 4 == page.count("data-step=")  # two members, the step before, the gathering one
    assert "waiting for the workflow steps before it" in page
    await dash.run_all()
    page = (await dash.page(f"/jobs/{handle.id}")).text
    assert 'data-state="failed"' in page
    assert "WorkflowStepFailed" in page
    first = (await handle.steps())[0]
    step_page = (await dash.page(f"/jobs/{first.id}")).text
    assert f"/dashboard/jobs/{handle.id}" in step_page
