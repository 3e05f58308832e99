"""deployments/: the Prefect project file, the Kubernetes GPU job template and the GPU-limit script.

Static checks (the YAML parses, entrypoints exist, the cron is valid, parameters validate against
the flows' settings models, the job template is a valid base job template whose GPU request is the
``gpu_count`` variable), then against a Prefect test server: ``ensure_gpu_limit`` creates and
updates the limit, and a real ``prefect deploy --all`` creates the three deployments on the GPU pool.
"""

from __future__ import annotations

import ast
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENTS = REPO / "deployments"
PREFECT_YAML = DEPLOYMENTS / "prefect.yaml"
JOB_TEMPLATE = DEPLOYMENTS / "k8s-gpu-job-template.json"

EXPECTED = {
    "learn-catalog-nightly": ("flows/learn.py:learn_catalog", "learn-catalog"),
    "learn-concept": ("flows/learn.py:learn_concept", "learn-concept"),
    "learn-pack": ("flows/learn_pack.py:learn_pack", "learn-pack"),
}


@pytest.fixture(scope="module")
def project() -> dict:
    return yaml.safe_load(PREFECT_YAML.read_text())


@pytest.fixture(scope="module")
def deployments(project: dict) -> dict[str, dict]:
    return {d["name"]: d for d in project["deployments"]}


@pytest.fixture(scope="module")
def template() -> dict:
    return json.loads(JOB_TEMPLATE.read_text())


# --- prefect.yaml -----------------------------------------------------------------------------------


def test_project_file_is_a_valid_prefect_project(project: dict) -> None:
    from prefect.cli.deploy._models import PrefectYamlModel

    model = PrefectYamlModel.model_validate(project)
    assert model.name == "sstar"
    (pull,) = project["pull"]
    assert pull == {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $SSTAR_SOURCE_DIR }}"}}


def test_the_deployments_point_at_existing_flow_functions(deployments: dict[str, dict]) -> None:
    assert set(deployments) == set(EXPECTED)
    for name, (entrypoint, flow_name) in EXPECTED.items():
        assert deployments[name]["entrypoint"] == entrypoint
        path, function = entrypoint.split(":")
        source = (REPO / path).read_text()
        functions = {
            node.name: node
            for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        }
        assert function in functions, f"{path} has no def {function}"
        flow_names = [
            kw.value.value
            for dec in functions[function].decorator_list
            if isinstance(dec, ast.Call)
            for kw in dec.keywords
            if kw.arg == "name" and isinstance(kw.value, ast.Constant)
        ]
        assert flow_names == [flow_name]
        assert deployments[name]["work_pool"]["name"] == "gpu-pool"


def test_nightly_schedule_is_a_valid_utc_cron(deployments: dict[str, dict]) -> None:
    from datetime import datetime, timezone

    from cronsim import CronSim

    (schedule,) = deployments["learn-catalog-nightly"]["schedules"]
    assert schedule["cron"] == "0 2 * * *" and schedule["timezone"] == "UTC"
    first = next(CronSim(schedule["cron"], datetime(2024, 5, 1, 12, tzinfo=timezone.utc)))
    assert (first.day, first.hour, first.minute) == (2, 2, 0)
    assert not deployments["learn-concept"].get("schedules")
    assert not deployments["learn-pack"].get("schedules")


def test_parameters_validate_against_the_settings_models(deployments: dict[str, dict]) -> None:
    from tasks.settings import EvalSettings, LearnSettings, RunSettings

    for deployment in deployments.values():
        params = deployment["parameters"]
        assert params["catalog"].startswith("s3://") and params["out"].startswith("s3://")
        LearnSettings(**params["learn"])
        EvalSettings(**params["evaluation"])
        run = RunSettings(**params["run"])
        assert run.gpu_limit_name == "sstar-gpu"
    nightly = deployments["learn-catalog-nightly"]
    assert nightly["parameters"]["run"]["deployment"] == "learn-pack/learn-pack"  # one flow run per pack
    assert set(deployments["learn-concept"]["parameters"]) == {
        "catalog",
        "out",
        "learn",
        "evaluation",
        "run",
        "parent_run_id",
    }
    # concept_ids and parent_run_id come from the nightly run, pack by pack
    assert set(deployments["learn-pack"]["parameters"]) == {"catalog", "out", "learn", "evaluation", "run"}


def test_gpu_requests_per_deployment(deployments: dict[str, dict], template: dict) -> None:
    import jsonschema

    variables = template["variables"]
    for deployment in deployments.values():
        jsonschema.validate(deployment["work_pool"]["job_variables"], variables)
    assert deployments["learn-concept"]["work_pool"]["job_variables"]["gpu_count"] == 1
    assert deployments["learn-pack"]["work_pool"]["job_variables"]["gpu_count"] == 1


# --- the Kubernetes base job template ----------------------------------------------------------------


def _render(template: dict, **values) -> dict:
    """What the worker does: the variables' defaults, overridden by ``values``, applied to the template."""
    from prefect.utilities.templating import apply_values

    defaults = {k: v["default"] for k, v in template["variables"]["properties"].items() if "default" in v}
    return apply_values(copy.deepcopy(template["job_configuration"]), defaults | values)


def test_job_template_is_a_valid_base_job_template(template: dict) -> None:
    import jsonschema
    from prefect.server.schemas.actions import validate_base_job_template

    assert set(template) == {"job_configuration", "variables"}
    validate_base_job_template(template)  # every placeholder is a declared variable
    jsonschema.Draft7Validator.check_schema(template["variables"])
    defaults = {k: v["default"] for k, v in template["variables"]["properties"].items() if "default" in v}
    jsonschema.validate(defaults, template["variables"])
    gpu = template["variables"]["properties"]["gpu_count"]
    assert gpu["type"] == "integer" and gpu["default"] == 1


def test_gpu_limit_references_gpu_count(template: dict) -> None:
    (container,) = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu_count }}"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "{{ gpu_count }}"

    pod = _render(template, gpu_count=2)["job_manifest"]["spec"]["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 2 and resources["requests"]["nvidia.com/gpu"] == 2
    assert resources["requests"]["memory"] == "24Gi" and "cpu" not in resources["limits"]  # unset → dropped
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert "nodeSelector" not in pod
    pod = _render(template, node_selector={"nvidia.com/gpu.product": "NVIDIA-L4"})["job_manifest"]["spec"]
    assert pod["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    assert pod["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = _render(template)["env"]
    assert env["SSTAR_SOURCE_DIR"] == "/opt/sstar"


# --- against a Prefect server ------------------------------------------------------------------------


def test_ensure_gpu_limit_creates_then_updates(prefect_harness) -> None:
    from prefect.client.orchestration import get_client

    from deployments.create_gpu_limit import ensure_gpu_limit, main

    name = "sstar-gpu-test-limit"
    assert ensure_gpu_limit(name, slots=2) == "created"
    assert ensure_gpu_limit(name, slots=2) == "unchanged"
    assert main(["--name", name, "--slots", "5"]) == 0
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(name)
    assert limit.limit == 5 and limit.active
    with pytest.raises(SystemExit):
        main(["--name", name, "--slots", "0"])


def test_prefect_deploy_creates_the_deployments(prefect_harness, template: dict) -> None:
    """`prefect deploy --all` from the repository root, as the README says, against the test server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL

    with get_client(sync_client=True) as client:
        client.create_work_pool(
            WorkPoolCreate(name="gpu-pool", type="kubernetes", base_job_template=template), overwrite=True
        )
    env = {k: v for k, v in os.environ.items() if k != "SSTAR_SOURCE_DIR"}
    env["PREFECT_API_URL"] = PREFECT_API_URL.value()
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all", "--prefect-file", str(PREFECT_YAML)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    with get_client(sync_client=True) as client:
        nightly = client.read_deployment_by_name("learn-catalog/learn-catalog-nightly")
        adhoc = client.read_deployment_by_name("learn-concept/learn-concept")
        pack = client.read_deployment_by_name("learn-pack/learn-pack")
    assert nightly.work_pool_name == adhoc.work_pool_name == "gpu-pool"
    (schedule,) = nightly.schedules
    assert schedule.schedule.cron == "0 2 * * *" and schedule.schedule.timezone == "UTC" and schedule.active
    assert not adhoc.schedules
    assert adhoc.job_variables == {"gpu_count": 1} and nightly.job_variables["gpu_count"] == 0
    assert (
        nightly.pull_steps[0]["prefect.deployments.steps.set_working_directory"]["directory"]
        == "{{ $SSTAR_SOURCE_DIR }}"
    )
    assert set(adhoc.parameter_openapi_schema["properties"]) >= {"catalog", "concept_id", "out", "learn", "run"}
    assert pack.work_pool_name == "gpu-pool" and pack.job_variables == {"gpu_count": 1} and not pack.schedules
    assert set(pack.parameter_openapi_schema["required"]) >= {"concept_ids", "parent_run_id"}
