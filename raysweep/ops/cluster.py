"""`raysweep cluster validate`: check cluster configs offline, before `ray up` spends money.

Ray's own schema and validator (`prepare_config` + `validate_config`, no cloud credentials)
for cluster-launcher YAMLs; a structural check for KubeRay `RayCluster` manifests (their CRD
schema is not available offline). On top, what a raysweep cluster needs: token auth on, the
dashboard on localhost, shared storage named (RAYSWEEP_STORAGE) on every node, the
`trial_driver` resource on the head, and min_workers <= max_workers per node type.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from pathlib import Path

import yaml

STORAGE_ENV = "RAYSWEEP_STORAGE"  # the shared storage every node of a cluster names
DRIVER_RESOURCE = "trial_driver"  # trial drivers hold this instead of a CPU (CPU: 0 is refused)


def _where(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _ray_launcher_problems(config: dict) -> list[str]:
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    logging.getLogger("ray.autoscaler").setLevel(logging.WARNING)  # prepare_config logs defaults
    try:
        # Ray's cli_logger prints its own "PANIC" line before raising; the problem list says it once.
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            validate_config(prepare_config(copy.deepcopy(config)))
    except jsonschema.ValidationError as exc:
        return [f"{_where(exc.absolute_path)}: {exc.message} (Ray's cluster schema)"]
    except NotImplementedError as exc:  # raised for an unknown provider type
        provider = config.get("provider", {}).get("type")
        return [f"provider.type: unknown provider {provider!r} ({exc}); use aws, gcp, azure, local "
                "or another provider Ray's launcher knows"]
    except Exception as exc:  # ValueError, KeyError, and click's abort from the local provider
        return [f"{str(exc).strip() or type(exc).__name__} (Ray's cluster validator)"]
    return []


def _launcher_problems(config: dict) -> list[str]:
    problems = _ray_launcher_problems(config)
    if problems:
        return problems
    for name, node_type in (config.get("available_node_types") or {}).items():
        low, high = node_type.get("min_workers", 0), node_type.get("max_workers")
        if high is not None and low > high:
            problems.append(f"available_node_types.{name}: min_workers={low} > max_workers={high}; "
                            "lower min_workers or raise max_workers")
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        problems += _start_command_problems(key, " ".join(config.get(key) or []), head=key.startswith("head"))
    return problems


def _start_command_problems(key: str, commands: str, head: bool) -> list[str]:
    problems = []
    if not commands:
        return [f"{key}: missing; start Ray with RAY_AUTH_MODE=token and {STORAGE_ENV} exported"]
    if "RAY_AUTH_MODE=token" not in commands:
        problems.append(f"{key}: token auth is off; export RAY_AUTH_MODE=token before `ray start`")
    if f"{STORAGE_ENV}=" not in commands:
        problems.append(f"{key}: no shared storage; export {STORAGE_ENV}=<a path every node mounts, "
                        "e.g. NFS> before `ray start`")
    if "0.0.0.0" in commands:
        problems.append(f"{key}: the dashboard is bound to 0.0.0.0; use --dashboard-host=127.0.0.1 "
                        "and `ray dashboard CLUSTER.yaml`")
    if head and DRIVER_RESOURCE not in commands:
        problems.append(f"{key}: the head offers no '{DRIVER_RESOURCE}' resource; add "
                        f"--resources='{{\"{DRIVER_RESOURCE}\": 64}}' so trial drivers run there")
    return problems


def _container_env(template: dict) -> dict:
    env = {}
    for container in template.get("spec", {}).get("containers", []):
        env.update({e.get("name"): e.get("value") for e in container.get("env", [])})
    return env


def _kuberay_problems(manifest: dict) -> list[str]:
    problems = []
    if manifest.get("apiVersion") != "ray.io/v1":
        problems.append(f"apiVersion: {manifest.get('apiVersion')!r}; KubeRay's RayCluster is ray.io/v1")
    spec = manifest.get("spec")
    if not isinstance(spec, dict):
        return problems + ["spec: missing; a RayCluster needs spec.headGroupSpec"]
    head = spec.get("headGroupSpec")
    if not isinstance(head, dict) or "template" not in head:
        return problems + ["spec.headGroupSpec: missing or without a pod template"]
    groups = [("spec.headGroupSpec", head)] + [
        (f"spec.workerGroupSpecs[{i}]", g) for i, g in enumerate(spec.get("workerGroupSpecs") or [])]
    token_by_operator = (spec.get("authOptions") or {}).get("mode") == "token"
    for where, group in groups:
        env = _container_env(group.get("template", {}))
        if not token_by_operator and env.get("RAY_AUTH_MODE") != "token":
            problems.append(f"{where}: token auth is off; set spec.authOptions.mode: token "
                            "(KubeRay 1.5.1+) or RAY_AUTH_MODE=token on every container")
        if STORAGE_ENV not in env:
            problems.append(f"{where}: no shared storage; set the {STORAGE_ENV} env var on the containers")
        params = group.get("rayStartParams") or {}
        if params.get("dashboard-host") == "0.0.0.0":
            problems.append(f"{where}.rayStartParams.dashboard-host: 0.0.0.0; use 127.0.0.1 and "
                            "kubectl port-forward")
        low, high = group.get("minReplicas", 0), group.get("maxReplicas")
        if high is not None and low > high:
            problems.append(f"{where}: minReplicas={low} > maxReplicas={high}")
    if DRIVER_RESOURCE not in str((head.get("rayStartParams") or {}).get("resources", "")):
        problems.append(f"spec.headGroupSpec.rayStartParams.resources: no '{DRIVER_RESOURCE}'; trial "
                        "drivers need it on the head")
    return problems


def validate_cluster_file(path: Path) -> list[str]:
    """Problems of one config, each `field: what is wrong; the fix`; empty when it is fine."""
    path = Path(path)
    if not path.is_file():
        return ["file not found"]
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        return ["not valid YAML: " + " ".join(str(exc).split())]
    if not isinstance(config, dict):
        return [f"top level must be a mapping, got {type(config).__name__}"]
    if config.get("kind") == "RayCluster":
        return _kuberay_problems(config)
    return _launcher_problems(config)
