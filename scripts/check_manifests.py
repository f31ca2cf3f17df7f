#!/usr/bin/env python3
"""Checks of the rendered Kubernetes manifests that schema validation cannot make.

kubernetes-validate checks each built-in object against the Kubernetes schemas; it has no schema
for the custom resources (ServiceMonitor, Argo CD Application) and never looks across objects.
This script does both, for one rendered overlay (a multi-document YAML file):

- every object has apiVersion, kind and metadata.name; names are unique per kind;
- the Service selects the Deployment's pods, its target ports are named container ports, the
  PodDisruptionBudget and the NetworkPolicy select the same pods, probe ports exist;
- the Deployment mounts a ConfigMap of the rendering, and that ConfigMap holds pgbouncer.ini,
  which is written to --ini-out for `ollyscale-pooler --check`;
- the ServiceMonitor selects the Service and names one of its ports;
- with --expect-namespace/--expect-service: the Service has that name, namespace and port 5432
  and the Deployment runs 2 replicas (the ollyscale overlay's contract).

With --application FILE it also checks an Argo CD Application (its source path must exist).
Exit status 1 and one line per problem when anything is wrong.
"""

import argparse
import os
import sys

import yaml


def fail(problems, message):
    problems.append(message)


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_rendering(docs, args, problems):
    by_kind = {}
    for d in docs:
        for field in ("apiVersion", "kind"):
            if not d.get(field):
                fail(problems, f"object without {field}: {d}")
        name = (d.get("metadata") or {}).get("name")
        if not name:
            fail(problems, f"{d.get('kind')} without metadata.name")
            continue
        kind_map = by_kind.setdefault(d["kind"], {})
        if name in kind_map:
            fail(problems, f"two {d['kind']} objects named {name}")
        kind_map[name] = d

    deployments = list(by_kind.get("Deployment", {}).values())
    if len(deployments) != 1:
        fail(problems, f"expected one Deployment, found {len(deployments)}")
        return
    dep = deployments[0]
    pod = dep["spec"]["template"]
    pod_labels = pod["metadata"].get("labels", {})
    if not selects(dep["spec"]["selector"].get("matchLabels"), pod_labels):
        fail(problems, "the Deployment's selector does not match its pod labels")
    containers = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for c in containers for p in c.get("ports", [])}
    for c in containers:
        for probe in ("readinessProbe", "livenessProbe"):
            port = ((c.get(probe) or {}).get("httpGet") or {}).get("port")
            if port is None:
                fail(problems, f"container {c['name']} has no HTTP {probe}")
            elif isinstance(port, str) and port not in ports:
                fail(problems, f"{probe} names port {port}, which no container declares")

    # The ConfigMap with pgbouncer.ini that the Deployment mounts.
    mounted = [v["configMap"]["name"] for v in pod["spec"].get("volumes", []) if "configMap" in v]
    ini = None
    for name in mounted:
        cm = by_kind.get("ConfigMap", {}).get(name)
        if cm is None:
            fail(problems, f"the Deployment mounts ConfigMap {name}, which is not in the rendering")
        elif "pgbouncer.ini" in cm.get("data", {}):
            ini = cm["data"]["pgbouncer.ini"]
    if ini is None:
        fail(problems, "no mounted ConfigMap holds pgbouncer.ini")
    elif args.ini_out:
        with open(args.ini_out, "w", encoding="utf-8") as f:
            f.write(ini)

    pooler_services = []
    for svc in by_kind.get("Service", {}).values():
        sel = svc["spec"].get("selector") or {}
        if selects(sel, pod_labels):
            pooler_services.append(svc)
            for p in svc["spec"]["ports"]:
                target = p.get("targetPort", p["port"])
                if isinstance(target, str) and target not in ports:
                    fail(problems, f"Service {svc['metadata']['name']} targets unknown port {target}")
                elif isinstance(target, int) and target not in ports.values():
                    fail(problems, f"Service {svc['metadata']['name']} targets port {target}, not a container port")
    if not pooler_services:
        fail(problems, "no Service selects the pooler pods")
    for pdb in by_kind.get("PodDisruptionBudget", {}).values():
        if not selects(pdb["spec"]["selector"].get("matchLabels"), pod_labels):
            fail(problems, f"PodDisruptionBudget {pdb['metadata']['name']} does not select the pooler pods")
    for np in by_kind.get("NetworkPolicy", {}).values():
        if not selects(np["spec"]["podSelector"].get("matchLabels"), pod_labels):
            fail(problems, f"NetworkPolicy {np['metadata']['name']} does not select the pooler pods")
    for sm in by_kind.get("ServiceMonitor", {}).values():
        spec = sm.get("spec") or {}
        sel = (spec.get("selector") or {}).get("matchLabels") or {}
        matched = [s for s in pooler_services if selects(sel, s["metadata"].get("labels", {}))]
        if not matched:
            fail(problems, f"ServiceMonitor {sm['metadata']['name']} selects no pooler Service")
        endpoints = spec.get("endpoints") or []
        if not endpoints:
            fail(problems, f"ServiceMonitor {sm['metadata']['name']} has no endpoints")
        for ep in endpoints:
            names = {p.get("name") for s in matched for p in s["spec"]["ports"]}
            if ep.get("port") not in names:
                fail(problems, f"ServiceMonitor endpoint port {ep.get('port')} is not a port of the Service")

    if args.expect_service:
        svc = by_kind.get("Service", {}).get(args.expect_service)
        if svc is None:
            fail(problems, f"no Service {args.expect_service}")
        else:
            if svc["metadata"].get("namespace") != args.expect_namespace:
                fail(problems, f"Service {args.expect_service} is not in namespace {args.expect_namespace}")
            if 5432 not in [p["port"] for p in svc["spec"]["ports"]]:
                fail(problems, f"Service {args.expect_service} does not listen on 5432")
        if dep["metadata"]["name"] != args.expect_service or dep["spec"].get("replicas") != 2:
            fail(problems, f"the Deployment must be {args.expect_service} with 2 replicas")


def check_application(path, problems):
    with open(path, encoding="utf-8") as f:
        app = yaml.safe_load(f)
    if app.get("apiVersion") != "argoproj.io/v1alpha1" or app.get("kind") != "Application":
        fail(problems, f"{path}: not an argoproj.io/v1alpha1 Application")
        return
    spec = app.get("spec") or {}
    source = spec.get("source") or {}
    for field in ("repoURL", "targetRevision", "path"):
        if not source.get(field):
            fail(problems, f"{path}: spec.source.{field} is missing")
    if source.get("path") and not os.path.isfile(os.path.join(source["path"], "kustomization.yaml")):
        fail(problems, f"{path}: spec.source.path {source.get('path')} has no kustomization.yaml")
    dest = spec.get("destination") or {}
    if not dest.get("namespace") or not (dest.get("server") or dest.get("name")):
        fail(problems, f"{path}: spec.destination needs a namespace and a server or name")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rendered", help="output of kubectl kustomize")
    ap.add_argument("--ini-out", help="write the ConfigMap's pgbouncer.ini here")
    ap.add_argument("--expect-namespace")
    ap.add_argument("--expect-service")
    ap.add_argument("--application", action="append", default=[])
    args = ap.parse_args()
    with open(args.rendered, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    problems = []
    check_rendering(docs, args, problems)
    for path in args.application:
        check_application(path, problems)
    for p in problems:
        print(f"{args.rendered}: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"{args.rendered}: {len(docs)} objects consistent")


if __name__ == "__main__":
    main()
