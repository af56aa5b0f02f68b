#!/bin/sh
# devserver entrypoint: the dev container's main process. It starts the activity agent (if the
# image has python3) and, for a server with SSH, sshd as the image's user; then it becomes the
# command given as arguments.
if command -v python3 >/dev/null 2>&1; then
    python3 "${DEVSERVER_AGENT:-/opt/devserver/agent.py}" &
else
    echo "devserver: python3 is not in this image; activity is not measured, so the server" \
         "is never stopped for idleness (its deadline still applies)" >&2
fi

# sshd: unprivileged (run by the image's user, so it can log in only that user), keys only,
# the keys from the user's DevUser (the agent keeps DEVSERVER_SSH_KEYS_FILE in step), its host
# key in the persistent home so it stays the same across restarts and resizes.
start_sshd() {
    sshd=$(command -v sshd || echo /usr/sbin/sshd)
    if [ ! -x "$sshd" ]; then
        echo "devserver: this image has no sshd: SSH (VS Code Remote-SSH, scp) needs one" \
             "(the devserver dev image has it); devctl ssh works without it" >&2
        return
    fi
    if [ "$(id -u)" = 0 ]; then
        echo "devserver: sshd is not started: this image runs as root and dev servers allow" \
             "no root login; use an image with a user (the devserver dev image's is dev)" >&2
        return
    fi
    run=$(dirname "$DEVSERVER_SSH_KEYS_FILE")
    mkdir -p "$run"
    # the host key in the home, so it stays the same across restarts; a home this user cannot
    # write (a volume owned by root) keeps it in memory instead: a new key each start
    hostkeys="${HOME:-/tmp}/.ssh/devserver-host"
    if ! (mkdir -p "$hostkeys" && chmod 700 "$hostkeys") 2>/dev/null; then
        echo "devserver: $HOME is not writable by $(id -un); the SSH host key changes at" \
             "every start" >&2
        hostkeys="$run/host" && mkdir -p "$hostkeys"
    fi
    [ -f "$hostkeys/ssh_host_ed25519_key" ] ||
        ssh-keygen -q -t ed25519 -N '' -C "devserver" -f "$hostkeys/ssh_host_ed25519_key" ||
        { echo "devserver: ssh-keygen failed; sshd is not started" >&2; return; }
    [ -f "$DEVSERVER_SSH_KEYS_FILE" ] || (umask 077 && : > "$DEVSERVER_SSH_KEYS_FILE")
    listen=""
    [ -n "${DEVSERVER_SSH_LISTEN:-}" ] && listen="ListenAddress $DEVSERVER_SSH_LISTEN"
    cat > "$run/sshd_config" <<CONFIG
Port ${DEVSERVER_SSH_PORT}
$listen
HostKey $hostkeys/ssh_host_ed25519_key
PidFile $run/sshd.pid
AuthorizedKeysFile $DEVSERVER_SSH_KEYS_FILE
# the keys' directory is an emptyDir the kubelet makes 0777: its owner is not this user, so
# sshd's ownership check would refuse every key; the agent (this user) alone writes the file
StrictModes no
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
PermitUserEnvironment no
# VS Code Remote-SSH forwards to its server on this host; nothing else is reachable
AllowTcpForwarding local
PermitOpen localhost:* 127.0.0.1:* [::1]:*
AllowStreamLocalForwarding no
AllowAgentForwarding no
X11Forwarding no
PrintMotd no
Subsystem sftp internal-sftp
CONFIG
    "$sshd" -D -e -f "$run/sshd_config" &
}
if [ -n "${DEVSERVER_SSH_PORT:-}" ] && [ -n "${DEVSERVER_SSH_KEYS_FILE:-}" ]; then
    start_sshd
fi
exec "$@"
