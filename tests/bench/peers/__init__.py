"""Peers for the scale bench, written for it and never shipped: the standalone DevServer job
(home PVC, Deployment, Service, owner references, status Ready once the pod is) as its own
community would write it, in kopf and in Go with controller-runtime."""
