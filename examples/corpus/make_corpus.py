#!/usr/bin/env python3
"""Writes tasks.jsonl: 1,000 plausible tasks (fixed seed) for `warden policy diff`."""
import json
import random

rng = random.Random(20261204)
origins = ["internal"] * 7 + ["external"] * 2 + ["untrusted"]
classes = ["public", "internal", "internal", "confidential", "restricted"]
tenants = ["data-team", "ml", "web", "playground", "partners"]
memories = ["128Mi", "256Mi", "512Mi", "1Gi", "2Gi", "4Gi", "8Gi"]
with open("tasks.jsonl", "w") as f:
    for i in range(1000):
        task = {
            "name": f"job-{i:04d}",
            "tenant": rng.choice(tenants),
            "command": ["sh", "-c", "true"],
            "resources": {"memory": rng.choice(memories), "cpus": rng.choice(["250m", "500m", "1", "2"])},
            "network": "loopback" if rng.random() < 0.1 else "none",
            "risk": {"origin": rng.choice(origins), "data_class": rng.choice(classes)},
            "restartable": rng.random() < 0.5,
        }
        signals = {"risk": {"score": {"internal": 0, "external": 50, "untrusted": 90}[task["risk"]["origin"]]}}
        if rng.random() < 0.05:
            signals["load"] = {"memory_pressure": 3500}
        f.write(json.dumps({"task": task, "signals": signals}) + "\n")
