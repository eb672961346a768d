"""`raysweep cluster validate`: check cluster configs offline, before `ray up` spends money.

Ray's own schema and validator (`prepare_config` + `validate_config`, no cloud credentials)
for cluster-launcher YAMLs; a structural check for KubeRay `RayCluster` manifests (their CRD
schema is not available offline). On top, what a raysweep cluster needs: token auth on, the
dashboard on localhost, shared storage named (RAYSWEEP_STORAGE) on every node, the
`trial_driver` resource on the head, and min_workers <= max_workers per node type. And the
hardening of clusters/README.md, as far as a config can express it: on AWS, separate instance
profiles for head and workers, IMDSv2 only, every node in a security group of its own making (one
Ray's launcher creates opens SSH to 0.0.0.0/0); on GCP, separate service accounts, every node on a
named non-default network with the network tag its firewall rules target; on KubeRay, separate
service accounts; anywhere, EFS mounted with TLS.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import re
import shlex
from pathlib import Path

import yaml

STORAGE_ENV = "RAYSWEEP_STORAGE"  # the shared storage every node of a cluster names
DRIVER_RESOURCE = "trial_driver"  # trial drivers hold this instead of a CPU (CPU: 0 is refused)


def _where(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _ray_launcher_problems(config: dict) -> tuple[list[str], dict]:
    """Ray's verdict, and the config as Ray's launcher will use it (its defaults filled in)."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    logging.getLogger("ray.autoscaler").setLevel(logging.WARNING)  # prepare_config logs defaults
    try:
        # Ray's cli_logger prints its own "PANIC" line before raising; the problem list says it once.
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            prepared = prepare_config(copy.deepcopy(config))
            validate_config(prepared)
    except jsonschema.ValidationError as exc:
        return [f"{_where(exc.absolute_path)}: {exc.message} (Ray's cluster schema)"], config
    except NotImplementedError as exc:  # raised for an unknown provider type
        provider = config.get("provider", {}).get("type")
        return [f"provider.type: unknown provider {provider!r} ({exc}); use aws, gcp, azure, local "
                "or another provider Ray's launcher knows"], config
    except Exception as exc:  # ValueError, KeyError, and click's abort from the local provider
        return [f"{str(exc).strip() or type(exc).__name__} (Ray's cluster validator)"], config
    return [], prepared


def _launcher_problems(config: dict) -> list[str]:
    problems, prepared = _ray_launcher_problems(config)
    if problems:
        return problems
    for name, node_type in (config.get("available_node_types") or {}).items():
        low, high = node_type.get("min_workers", 0), node_type.get("max_workers")
        if high is not None and low > high:
            problems.append(f"available_node_types.{name}: min_workers={low} > max_workers={high}; "
                            "lower min_workers or raise max_workers")
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        problems += _start_command_problems(key, " ".join(config.get(key) or []), head=key.startswith("head"))
    # The hardening checks read the prepared config: node types left out get Ray's defaults, checked too.
    provider = prepared["provider"]["type"]
    if provider == "aws":
        problems += _aws_problems(prepared)
    if provider == "gcp":
        problems += _gcp_problems(prepared)
    # By what is mounted, not by provider: EFS is reachable from on-premises hosts too. The config as
    # written: prepare_config copies setup_commands into head_ and worker_setup_commands.
    problems += _efs_problems(config)
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


def _worker_types(config: dict) -> list[str]:
    return [name for name in config["available_node_types"] if name != config["head_node_type"]]


def _profile_name(profile: dict) -> str | None:
    """The instance profile's name, whether the config gives its Arn or its Name."""
    if profile.get("Arn"):
        return str(profile["Arn"]).rsplit("/", 1)[-1]
    return profile.get("Name")


def _aws_groups(node_config: dict) -> set[str]:
    # Ray's launcher takes the groups from NetworkInterfaces when those are given instead.
    groups = set(node_config.get("SecurityGroupIds") or [])
    for interface in node_config.get("NetworkInterfaces") or []:
        groups.update(interface.get("Groups") or [])
    return groups


def _aws_problems(config: dict) -> list[str]:
    problems = []
    types, head = config["available_node_types"], config["head_node_type"]
    head_profile = _profile_name(types[head]["node_config"].get("IamInstanceProfile") or {})
    head_groups = _aws_groups(types[head]["node_config"])
    for name in [head] + _worker_types(config):
        where = f"available_node_types.{name}.node_config"
        node_config = types[name]["node_config"]
        profile = _profile_name(node_config.get("IamInstanceProfile") or {})
        if name == head and not profile:
            # Ray's launcher then makes ray-autoscaler-v1 with AmazonEC2FullAccess + AmazonS3FullAccess.
            problems.append(f"{where}.IamInstanceProfile: missing, so `ray up` gives the head Ray's default role "
                            "(AmazonEC2FullAccess, AmazonS3FullAccess); name the head's own profile, "
                            "{Arn: arn:aws:iam::ACCOUNT_ID:instance-profile/raysweep-head}")
        elif not profile:
            problems.append(f"{where}.IamInstanceProfile: missing; name the workers' own profile, "
                            "{Arn: arn:aws:iam::ACCOUNT_ID:instance-profile/raysweep-worker}, "
                            "which may only read and write the bucket")
        elif name != head and profile == head_profile:
            problems.append(f"{where}.IamInstanceProfile: the head's profile ({profile}), which may launch "
                            "instances; give the workers their own (raysweep-worker) without ec2:RunInstances")
        tokens = (node_config.get("MetadataOptions") or {}).get("HttpTokens")
        if tokens != "required":
            problems.append(f"{where}.MetadataOptions.HttpTokens: {tokens or 'missing'}, so IMDSv1 hands out the "
                            "role's credentials without a session token; set MetadataOptions: {HttpTokens: "
                            "required, HttpEndpoint: enabled, HttpPutResponseHopLimit: 2}")
        groups = _aws_groups(node_config)
        if not groups:
            problems.append(f"{where}.SecurityGroupIds: missing, so Ray's launcher creates a group with SSH open "
                            "to 0.0.0.0/0; name the cluster's group (SSH from your admin CIDR, all traffic "
                            "within the group: clusters/README.md)")
        elif name != head and head_groups and not groups & head_groups:
            problems.append(f"{where}.SecurityGroupIds: no group in common with the head's "
                            f"({', '.join(sorted(head_groups))}), so the group's rule for traffic within the "
                            "cluster does not cover it; put every node in the cluster's group")
    return problems


def _gcp_email(node_config: dict) -> str | None:
    accounts = node_config.get("serviceAccounts") or [{}]
    return accounts[0].get("email")  # GCE attaches one service account per instance


def _gcp_tags(node_config: dict) -> set[str]:
    return set((node_config.get("tags") or {}).get("items") or [])


def _gcp_problems(config: dict) -> list[str]:
    problems = []
    types, head = config["available_node_types"], config["head_node_type"]
    head_email = _gcp_email(types[head]["node_config"])
    head_tags = _gcp_tags(types[head]["node_config"])
    for name in [head] + _worker_types(config):
        where = f"available_node_types.{name}.node_config"
        node_config = types[name]["node_config"]
        email = _gcp_email(node_config)
        if name == head and not email:
            # Ray's launcher then attaches ray-autoscaler-sa-v1, which it binds to roles/compute.admin.
            problems.append(f"{where}.serviceAccounts: missing, so `ray up` gives the head Ray's default account "
                            "ray-autoscaler-sa-v1 (roles/compute.admin on the project); name the head's own, "
                            "raysweep-head@PROJECT.iam.gserviceaccount.com")
        elif not email:
            problems.append(f"{where}.serviceAccounts: missing; name the workers' own account, "
                            "raysweep-worker@PROJECT.iam.gserviceaccount.com, which may only read and write "
                            "the bucket")
        elif name != head and email == head_email:
            problems.append(f"{where}.serviceAccounts: the head's account ({email}), which may create instances; "
                            "give the workers their own (raysweep-worker@PROJECT.iam.gserviceaccount.com) "
                            "without compute roles")
        interfaces = node_config.get("networkInterfaces") or []
        networks = {str(i.get(key, "")).rsplit("/", 1)[-1] for i in interfaces for key in ("network", "subnetwork")}
        if not interfaces:
            problems.append(f"{where}.networkInterfaces: missing, so Ray's launcher puts the node on the project's "
                            "first subnet, often the default network whose default-allow-ssh rule opens SSH to "
                            "0.0.0.0/0; name the cluster's subnetwork (clusters/README.md)")
        elif "default" in networks:
            problems.append(f"{where}.networkInterfaces: the default network, whose default-allow-ssh rule opens "
                            "SSH to 0.0.0.0/0; use the cluster's own network and subnetwork (clusters/README.md)")
        tags = _gcp_tags(node_config)
        if not tags:
            problems.append(f"{where}.tags: missing, so the cluster's firewall rules (which target a network tag) "
                            "do not apply to it; add tags: {items: [raysweep]}")
        elif name != head and head_tags and not tags & head_tags:
            problems.append(f"{where}.tags: no tag in common with the head's ({', '.join(sorted(head_tags))}), so "
                            "the firewall rule for traffic between nodes does not cover it; tag every node alike")
    return problems


_EFS_HOST = re.compile(r"\.efs\.[a-z0-9-]+\.amazonaws\.com")
_EFS_FIX = "mount with `mount -t efs -o tls FS_ID:/ /mnt/raysweep` (amazon-efs-utils)"


def _mounts(command: str):
    """(type, options, source) of each `mount` in a shell command; type None when left to mount."""
    for part in re.split(r"&&|\|\||[;|\n()]", command):
        try:
            words = shlex.split(part)
        except ValueError:
            words = part.split()
        # The program run: the first word past `sudo`, its flags and VAR=value assignments.
        start = 0
        while start < len(words) and (words[start] == "sudo" or words[start].startswith("-")
                                      or re.match(r"\w+=", words[start])):
            start += 1
        program = words[start].rsplit("/", 1)[-1] if start < len(words) else ""
        if program not in ("mount", "mount.efs", "mount.nfs", "mount.nfs4"):
            continue
        kind = program.split(".", 1)[1] if "." in program else None
        options, positional, args = [], [], iter(words[start + 1:])
        for word in args:
            if word in ("-t", "--types"):
                kind = next(args, None)
            elif word.startswith("--types="):
                kind = word.split("=", 1)[1]
            elif word in ("-o", "--options"):
                options += next(args, "").split(",")
            elif word.startswith("--options="):
                options += word.split("=", 1)[1].split(",")
            elif word.startswith("-o") and len(word) > 2:
                options += word[2:].split(",")
            elif word.startswith("-t") and len(word) > 2:
                kind = word[2:]
            elif not word.startswith("-"):
                positional.append(word)
        yield kind, options, positional[0] if positional else ""


def _command_lists(config: dict):
    for key in ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands"):
        yield key, config.get(key) or []
    for name, node_type in (config.get("available_node_types") or {}).items():
        for key in ("initialization_commands", "worker_setup_commands"):
            yield f"available_node_types.{name}.{key}", node_type.get(key) or []


def _efs_problems(config: dict) -> list[str]:
    problems = []
    for key, commands in _command_lists(config):
        for kind, options, source in (m for command in commands for m in _mounts(str(command))):
            if kind == "efs" and "tls" not in options:
                problems.append(f"{key}: EFS mounted without TLS; {_EFS_FIX}")
            elif kind in (None, "nfs", "nfs4") and _EFS_HOST.search(source):
                problems.append(f"{key}: EFS mounted as plain NFS ({source}), unencrypted in transit; {_EFS_FIX}")
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
    problems += _kuberay_account_problems(groups)
    if DRIVER_RESOURCE not in str((head.get("rayStartParams") or {}).get("resources", "")):
        problems.append(f"spec.headGroupSpec.rayStartParams.resources: no '{DRIVER_RESOURCE}'; trial "
                        "drivers need it on the head")
    return problems


def _kuberay_account_problems(groups: list) -> list[str]:
    # Who may do what (RBAC) lives outside the manifest; the manifest can only keep the accounts apart.
    problems = []
    head_account = groups[0][1].get("template", {}).get("spec", {}).get("serviceAccountName")
    for where, group in groups:
        account = group.get("template", {}).get("spec", {}).get("serviceAccountName")
        field = f"{where}.template.spec.serviceAccountName"
        if where == "spec.headGroupSpec" and not account:
            problems.append(f"{field}: missing; name the head's own service account (raysweep-head), "
                            "which KubeRay binds to its autoscaler Role")
        elif not account:
            problems.append(f"{field}: missing, so the pods run as the namespace's `default` account; name the "
                            "workers' own (raysweep-worker) and bind no Role to it")
        elif where != "spec.headGroupSpec" and account == head_account:
            problems.append(f"{field}: the head's account ({account}), which may patch pods and the RayCluster; "
                            "give the workers their own (raysweep-worker) and bind no Role to it")
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
