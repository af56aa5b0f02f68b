"""The SSH bastion: keys from DevUsers, account sync, per-user kubeconfigs, audit."""
