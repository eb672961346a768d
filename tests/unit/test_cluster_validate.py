"""`raysweep cluster validate`: every shipped config passes Ray's own validator and raysweep's
checks; broken copies fail with a message naming the field."""

from __future__ import annotations


import pytest
import yaml

from raysweep import cli
from raysweep.ops.cluster import validate_cluster_file
from tests.conftest import REPO

SHIPPED = sorted((REPO / "clusters").glob("*.yaml"))


def test_every_shipped_config_is_valid(capsys):
    assert {p.name for p in SHIPPED} >= {"aws-gpu.yaml", "gcp-gpu.yaml", "onprem.yaml", "kuberay.yaml"}
    assert cli.main(["cluster", "validate", *map(str, SHIPPED)]) == 0
    assert capsys.readouterr().out.count(": ok") == len(SHIPPED)


def _drop_storage(config: dict) -> None:
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        config[key] = [c.replace("RAYSWEEP_STORAGE=", "OTHER=") for c in config[key]]


def _set(path: str, value):
    def edit(config: dict) -> None:
        *parents, last = path.split(".")
        node = config
        for key in parents:
            node = node[key]
        node[last] = value
    return edit


BROKEN = {
    # id: (shipped file, edit, text the error must contain)
    "typo-key": ("aws-gpu.yaml", _set("max_worker", 3), "'max_worker' was unexpected"),
    "wrong-type": ("aws-gpu.yaml", _set("max_workers", "ten"), "max_workers: 'ten' is not of type 'integer'"),
    "unknown-provider": ("gcp-gpu.yaml", _set("provider.type", "gcq"), "provider.type: unknown provider 'gcq'"),
    "head-type-undefined": ("aws-gpu.yaml", _set("head_node_type", "boss"),
                            "`head_node_type` must be one of `available_node_types`"),
    "min-above-max": ("aws-gpu.yaml", _set("available_node_types.gpu_spot.min_workers", 9),
                      "available_node_types.gpu_spot: min_workers=9 > max_workers=8"),
    "missing-storage": ("gcp-gpu.yaml", _drop_storage, "head_start_ray_commands: no shared storage"),
    "token-auth-off": ("onprem.yaml", lambda c: c.update(head_start_ray_commands=[
        x.replace("RAY_AUTH_MODE=token ", "") for x in c["head_start_ray_commands"]]),
        "head_start_ray_commands: token auth is off"),
    "public-dashboard": ("aws-gpu.yaml", lambda c: c.update(head_start_ray_commands=[
        x.replace("127.0.0.1", "0.0.0.0") for x in c["head_start_ray_commands"]]),
        "the dashboard is bound to 0.0.0.0"),
    "kuberay-min-above-max": ("kuberay.yaml", _set("spec.workerGroupSpecs", [
        {"groupName": "gpu", "minReplicas": 4, "maxReplicas": 2, "template": {"spec": {"containers": [
            {"name": "w", "env": [{"name": "RAYSWEEP_STORAGE", "value": "s3://b/s"}]}]}}}]),
        "spec.workerGroupSpecs[0]: minReplicas=4 > maxReplicas=2"),
    "onprem-without-head-ip": ("onprem.yaml", lambda c: c["provider"].pop("head_ip"), "(Ray's cluster validator)"),
    "kuberay-no-auth": ("kuberay.yaml", lambda c: c["spec"].pop("authOptions"), "token auth is off"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_config_fails_with_a_named_field(case, tmp_path, capsys):
    source, edit, expected = BROKEN[case]
    config = yaml.safe_load((REPO / "clusters" / source).read_text())
    edit(config)
    broken = tmp_path / source
    broken.write_text(yaml.safe_dump(config))
    assert cli.main(["cluster", "validate", str(broken)]) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert all(line.startswith(f"{broken}: ") for line in err.splitlines())


def test_not_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster_name: [unclosed")
    assert validate_cluster_file(bad)[0].startswith("not valid YAML")
    assert validate_cluster_file(tmp_path / "none.yaml") == ["file not found"]
