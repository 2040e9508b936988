"""kustomize's rendering of deploy/k8s, in Python, for the tests (kubectl is not needed to run them).

It implements the kustomization fields deploy/k8s/kustomization.yaml uses — resources, namespace,
labels (metadata only), images, configMapGenerator (files, options.labels,
disableNameSuffixHash) and replacements (a field copied from a source object into targets,
`[key=value]` list selectors included) — and refuses any other field, so that a kustomization
this renderer does not understand fails the tests instead of rendering wrong. When kubectl is on
PATH, a test compares this rendering with `kubectl kustomize`.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml

SUPPORTED = {"apiVersion", "kind", "namespace", "labels", "resources", "configMapGenerator", "images", "replacements"}
# Kinds that live outside any namespace (of those a kustomization here may hold).
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def render(directory: Path) -> list[dict]:
    """The objects `kubectl kustomize directory` would print, in resource order."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise ValueError(f"kustomization fields this renderer does not implement: {sorted(unknown)}")
    objects = [
        doc for name in kustomization["resources"] for doc in yaml.safe_load_all((directory / name).read_text()) if doc
    ]
    objects += [_generated_configmap(directory, gen) for gen in kustomization.get("configMapGenerator", [])]
    for obj in objects:
        if obj["kind"] not in CLUSTER_SCOPED and "namespace" in kustomization:
            obj["metadata"]["namespace"] = kustomization["namespace"]
        for entry in kustomization.get("labels", []):
            if set(entry) - {"pairs"}:
                raise ValueError(f"labels options this renderer does not implement: {sorted(set(entry) - {'pairs'})}")
            obj["metadata"].setdefault("labels", {}).update(entry["pairs"])
        for container in _containers(obj):
            for image in kustomization.get("images", []):
                if container["image"] == image["name"]:
                    container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    for replacement in kustomization.get("replacements", []):
        _replace(objects, replacement)
    return objects


def _generated_configmap(directory: Path, generator: dict) -> dict:
    options = generator.get("options", {})
    if not options.get("disableNameSuffixHash"):
        raise ValueError("configMapGenerator without disableNameSuffixHash: name hashing is not implemented")
    data = {Path(name).name: (directory / name).read_text() for name in generator.get("files", [])}
    metadata = {"name": generator["name"], **({"labels": dict(options["labels"])} if "labels" in options else {})}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


def _containers(obj: dict) -> list[dict]:
    spec = obj.get("spec", {})
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    if obj["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}:
        pod = spec["template"]["spec"]
        return [*pod.get("initContainers", []), *pod["containers"]]
    return []


def _path(field_path: str) -> list[str]:
    return re.findall(r"\[[^\]]*\]|[^.\[\]]+", field_path)


def _get(obj, field_path: str):
    for part in _path(field_path):
        obj = _step(obj, part)
    return obj


def _step(node, part: str):
    if part.startswith("["):
        key, value = part[1:-1].split("=", 1)
        (found,) = [item for item in node if item.get(key) == value]
        return found
    return node[part]


def _selected(obj: dict, select: dict) -> bool:
    return all(obj["kind"] == v if k == "kind" else obj["metadata"].get(k) == v for k, v in select.items())


def _replace(objects: list[dict], replacement: dict) -> None:
    source = replacement["source"]
    (origin,) = [o for o in objects if o["kind"] == source["kind"] and o["metadata"]["name"] == source["name"]]
    value = copy.deepcopy(_get(origin, source["fieldPath"]))
    for target in replacement["targets"]:
        select = target["select"]
        chosen = [o for o in objects if _selected(o, select)]
        if not chosen:
            raise ValueError(f"replacement target {select} matches nothing")
        for obj in chosen:
            for field_path in target["fieldPaths"]:
                *parents, last = _path(field_path)
                node = obj
                for part in parents:
                    node = _step(node, part)
                node[last] = value
