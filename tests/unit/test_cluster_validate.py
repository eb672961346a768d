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


def _node(name: str, config: dict) -> dict:
    return config["available_node_types"][name]["node_config"]


def _pop(node_type: str, key: str):
    return lambda c: _node(node_type, c).pop(key)


def _node_set(node_type: str, key: str, value):
    return lambda c: _node(node_type, c).__setitem__(key, value)


def _replace_in(key: str, old: str, new: str):
    def edit(config: dict) -> None:
        assert any(old in command for command in config[key]), (key, old)  # the edit must change something
        config[key] = [command.replace(old, new) for command in config[key]]
    return edit


def _head_sa(config: dict) -> None:
    config["spec"]["headGroupSpec"]["template"]["spec"].pop("serviceAccountName")


def _worker_sa(account):
    def edit(config: dict) -> None:
        template = config["spec"]["workerGroupSpecs"][0]["template"]["spec"]
        if account is None:
            template.pop("serviceAccountName")
        else:
            template["serviceAccountName"] = account
    return edit


NODE = "available_node_types.{}.node_config"
GCP_HEAD = "raysweep-head@my-gcp-project.iam.gserviceaccount.com"
EFS_FIX = "mount with `mount -t efs -o tls FS_ID:/ /mnt/raysweep` (amazon-efs-utils)"
IMDS_FIX = ("so IMDSv1 hands out the role's credentials without a session token; set MetadataOptions: "
            "{HttpTokens: required, HttpEndpoint: enabled, HttpPutResponseHopLimit: 2}")

# Each breaks exactly one hardening property of a shipped config: (file, edit, the one problem expected).
HARDENING = {
    "aws-head-without-profile": ("aws-gpu.yaml", _pop("head", "IamInstanceProfile"),
        NODE.format("head") + ".IamInstanceProfile: missing, so `ray up` gives the head Ray's default role "
        "(AmazonEC2FullAccess, AmazonS3FullAccess); name the head's own profile, "
        "{Arn: arn:aws:iam::ACCOUNT_ID:instance-profile/raysweep-head}"),
    "aws-worker-without-profile": ("aws-gpu.yaml", _pop("gpu_spot", "IamInstanceProfile"),
        NODE.format("gpu_spot") + ".IamInstanceProfile: missing; name the workers' own profile, "
        "{Arn: arn:aws:iam::ACCOUNT_ID:instance-profile/raysweep-worker}, which may only read and write the bucket"),
    "aws-worker-with-head-profile": ("aws-gpu.yaml",
        _node_set("gpu_on_demand", "IamInstanceProfile", {"Name": "raysweep-head"}),  # same profile, by Name
        NODE.format("gpu_on_demand") + ".IamInstanceProfile: the head's profile (raysweep-head), which may "
        "launch instances; give the workers their own (raysweep-worker) without ec2:RunInstances"),
    "aws-imdsv1-allowed": ("aws-gpu.yaml",
        lambda c: _node("gpu_spot", c)["MetadataOptions"].update(HttpTokens="optional"),
        NODE.format("gpu_spot") + ".MetadataOptions.HttpTokens: optional, " + IMDS_FIX),
    "aws-no-metadata-options": ("aws-gpu.yaml", _pop("head", "MetadataOptions"),
        NODE.format("head") + ".MetadataOptions.HttpTokens: missing, " + IMDS_FIX),
    "aws-no-security-group": ("aws-gpu.yaml", _pop("gpu_on_demand", "SecurityGroupIds"),
        NODE.format("gpu_on_demand") + ".SecurityGroupIds: missing, so Ray's launcher creates a group with SSH "
        "open to 0.0.0.0/0; name the cluster's group (SSH from your admin CIDR, all traffic within the group: "
        "clusters/README.md)"),
    "aws-worker-outside-head-group": ("aws-gpu.yaml", _node_set("gpu_spot", "SecurityGroupIds", ["sg-0fedcba98"]),
        NODE.format("gpu_spot") + ".SecurityGroupIds: no group in common with the head's "
        "(sg-0123456789abcdef0), so the group's rule for traffic within the cluster does not cover it; "
        "put every node in the cluster's group"),
    "efs-without-tls": ("aws-gpu.yaml", _replace_in("setup_commands", "-t efs -o tls ", "-t efs "),
        "setup_commands: EFS mounted without TLS; " + EFS_FIX),
    "efs-notls": ("aws-gpu.yaml", _replace_in("setup_commands", "-o tls ", "-o notls "),
        "setup_commands: EFS mounted without TLS; " + EFS_FIX),
    "efs-as-plain-nfs": ("aws-gpu.yaml", _replace_in(
        "setup_commands", "mount -t efs -o tls fs-0123456789abcdef0:/",
        "mount -t nfs4 -o nfsvers=4.1 fs-0123456789abcdef0.efs.us-east-1.amazonaws.com:/"),
        "setup_commands: EFS mounted as plain NFS (fs-0123456789abcdef0.efs.us-east-1.amazonaws.com:/), "
        "unencrypted in transit; " + EFS_FIX),
    # The EFS check follows the mount, not the provider: on premises the same mount is refused.
    "onprem-efs-as-plain-nfs": ("onprem.yaml", lambda c: c["setup_commands"].insert(
        0, "sudo mount fs-1.efs.eu-west-1.amazonaws.com:/ /mnt/raysweep"),
        "setup_commands: EFS mounted as plain NFS (fs-1.efs.eu-west-1.amazonaws.com:/), unencrypted in transit; "
        + EFS_FIX),
    "gcp-head-without-account": ("gcp-gpu.yaml", _pop("head", "serviceAccounts"),
        NODE.format("head") + ".serviceAccounts: missing, so `ray up` gives the head Ray's default account "
        "ray-autoscaler-sa-v1 (roles/compute.admin on the project); name the head's own, "
        "raysweep-head@PROJECT.iam.gserviceaccount.com"),
    "gcp-worker-without-account": ("gcp-gpu.yaml", _pop("gpu_on_demand", "serviceAccounts"),
        NODE.format("gpu_on_demand") + ".serviceAccounts: missing; name the workers' own account, "
        "raysweep-worker@PROJECT.iam.gserviceaccount.com, which may only read and write the bucket"),
    "gcp-worker-with-head-account": ("gcp-gpu.yaml", _node_set("gpu_spot", "serviceAccounts", [{"email": GCP_HEAD}]),
        NODE.format("gpu_spot") + f".serviceAccounts: the head's account ({GCP_HEAD}), which may create "
        "instances; give the workers their own (raysweep-worker@PROJECT.iam.gserviceaccount.com) without "
        "compute roles"),
    "gcp-no-network": ("gcp-gpu.yaml", _pop("head", "networkInterfaces"),
        NODE.format("head") + ".networkInterfaces: missing, so Ray's launcher puts the node on the project's "
        "first subnet, often the default network whose default-allow-ssh rule opens SSH to 0.0.0.0/0; name the "
        "cluster's subnetwork (clusters/README.md)"),
    "gcp-default-network": ("gcp-gpu.yaml", _node_set("gpu_spot", "networkInterfaces", [
        {"network": "global/networks/default"}]),
        NODE.format("gpu_spot") + ".networkInterfaces: the default network, whose default-allow-ssh rule "
        "opens SSH to 0.0.0.0/0; use the cluster's own network and subnetwork (clusters/README.md)"),
    "gcp-no-tags": ("gcp-gpu.yaml", _pop("gpu_on_demand", "tags"),
        NODE.format("gpu_on_demand") + ".tags: missing, so the cluster's firewall rules (which target a "
        "network tag) do not apply to it; add tags: {items: [raysweep]}"),
    "gcp-worker-other-tag": ("gcp-gpu.yaml", _node_set("gpu_spot", "tags", {"items": ["gpu"]}),
        NODE.format("gpu_spot") + ".tags: no tag in common with the head's (raysweep), so the firewall rule "
        "for traffic between nodes does not cover it; tag every node alike"),
    "kuberay-head-without-account": ("kuberay.yaml", _head_sa,
        "spec.headGroupSpec.template.spec.serviceAccountName: missing; name the head's own service account "
        "(raysweep-head), which KubeRay binds to its autoscaler Role"),
    "kuberay-worker-without-account": ("kuberay.yaml", _worker_sa(None),
        "spec.workerGroupSpecs[0].template.spec.serviceAccountName: missing, so the pods run as the namespace's "
        "`default` account; name the workers' own (raysweep-worker) and bind no Role to it"),
    "kuberay-worker-with-head-account": ("kuberay.yaml", _worker_sa("raysweep-head"),
        "spec.workerGroupSpecs[0].template.spec.serviceAccountName: the head's account (raysweep-head), which "
        "may patch pods and the RayCluster; give the workers their own (raysweep-worker) and bind no Role to it"),
}


@pytest.mark.parametrize("case", sorted(HARDENING))
def test_dropping_a_hardening_property_is_refused(case, tmp_path):
    source, edit, expected = HARDENING[case]
    config = yaml.safe_load((REPO / "clusters" / source).read_text())
    edit(config)
    broken = tmp_path / source
    broken.write_text(yaml.safe_dump(config))
    assert validate_cluster_file(broken) == [expected]


def test_node_types_left_to_rays_defaults_are_checked_too(tmp_path):
    """Without available_node_types Ray's launcher uses its own, with no profile or group: refused."""
    config = yaml.safe_load((REPO / "clusters" / "aws-gpu.yaml").read_text())
    del config["available_node_types"], config["head_node_type"]
    (tmp_path / "aws.yaml").write_text(yaml.safe_dump(config))
    problems = validate_cluster_file(tmp_path / "aws.yaml")
    assert [p.split(":")[0] for p in problems] == [
        f"available_node_types.ray.{kind}.default.node_config.{field}"
        for kind in ("head", "worker") for field in ("IamInstanceProfile", "MetadataOptions.HttpTokens",
                                                    "SecurityGroupIds")]


def test_not_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster_name: [unclosed")
    assert validate_cluster_file(bad)[0].startswith("not valid YAML")
    assert validate_cluster_file(tmp_path / "none.yaml") == ["file not found"]
