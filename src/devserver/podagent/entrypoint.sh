#!/bin/sh
# devserver entrypoint: the dev container's main process. It starts the activity agent (if the
# image has python3) and then becomes the command given as arguments.
if command -v python3 >/dev/null 2>&1; then
    python3 "${DEVSERVER_AGENT:-/opt/devserver/agent.py}" &
else
    echo "devserver: python3 is not in this image; activity is not measured, so the server" \
         "is never stopped for idleness (its deadline still applies)" >&2
fi
exec "$@"
