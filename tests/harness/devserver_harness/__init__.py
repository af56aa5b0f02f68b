"""The local control-plane harness: real upstream binaries as loopback processes.

Used by the test suite (``pytest_plugin``) and by ``nox -s up`` (``up``). Runtime code never
imports it. Map: ``binaries`` builds and caches the pinned Go binaries; ``pki`` and
``kubeconfig`` make credentials; ``components`` holds each binary's command line;
``process`` runs and reaps children; ``nodes`` models EKS node groups for kwok;
``provisioner`` stands in for the EBS CSI driver; ``controlplane`` puts it all together.
"""
