#!/bin/sh
# Writes the secrets swarm/stack.yml (and swarm/consoles.yml) read, from one
# freshly generated MongoDB password, into swarm/secrets/ (or DIR):
#
#   mongo_root_username  mongo_root_password   read by the mongo image (*_FILE)
#   jobkit_env           a dotenv file: JOBKIT_BACKEND_URL=mongodb://user:password@mongo:27017/jobs?authSource=admin
#                        (+ JOBKIT_API_TOKEN with --api-token), read by
#                        `jobkit … --env-file /run/secrets/jobkit_env`
#   consoles_mongo_url   the same URL alone, for mongo-express (consoles.yml)
#   consoles_password    mongo-express's login password (user: jobkit)
#
# Usage: swarm/make-secrets.sh [--api-token] [DIR]
#   MONGO_ROOT_USERNAME=name  overrides the user name (default: jobkit)
#
# `docker stack deploy` and `docker compose` both read these files (the
# stack's `secrets: file:`), so neither the stack file nor the service specs
# ever hold a password. Existing files are never overwritten: MongoDB keeps
# the password it was initialised with, and Swarm secrets cannot change, so a
# second, different password would only lock jobkit out. Keep the folder
# backed up with the MongoDB data it unlocks.
set -eu

api_token=
if [ "${1:-}" = "--api-token" ]; then
    api_token=1
    shift
fi
dir=${1:-$(dirname "$0")/secrets}
user=${MONGO_ROOT_USERNAME:-jobkit}
names="mongo_root_username mongo_root_password jobkit_env consoles_mongo_url consoles_password"

case $user in
    *[!A-Za-z0-9._-]*|'') echo "$0: MONGO_ROOT_USERNAME may hold only letters, digits, '.', '_' and '-'" >&2; exit 2 ;;
esac
for name in $names; do
    if [ -e "$dir/$name" ]; then
        echo "$0: $dir/$name exists; refusing to overwrite the secrets (see the comment at the top)" >&2
        exit 1
    fi
done

# 32 random bytes as hex: 256 bits, and safe in a URL without escaping.
random_hex() {
    od -An -N32 -tx1 /dev/urandom | tr -d ' \n'
}

umask 077
mkdir -p "$dir"
chmod 0700 "$dir"
password=$(random_hex)
url="mongodb://$user:$password@mongo:27017/jobs?authSource=admin"

printf '%s' "$user" > "$dir/mongo_root_username"
printf '%s' "$password" > "$dir/mongo_root_password"
{
    echo "# jobkit settings with credentials; read with --env-file (see swarm/stack.yml)"
    echo "JOBKIT_BACKEND_URL=$url"
    if [ -n "$api_token" ]; then
        echo "JOBKIT_API_TOKEN=$(random_hex)"
    fi
} > "$dir/jobkit_env"
printf '%s\n' "$url" > "$dir/consoles_mongo_url"
printf '%s' "$(random_hex)" > "$dir/consoles_password"

# Readable inside the containers: `docker compose` bind-mounts these files
# with their own mode, and the services run as non-root users (mongod drops
# to uid 999 before it reads its *_FILE variables). The folder stays 0700,
# so other users of this machine cannot reach them.
for name in $names; do
    chmod 0444 "$dir/$name"
done
echo "wrote $names to $dir"
if [ -n "$api_token" ]; then
    echo "the API token is the JOBKIT_API_TOKEN line of $dir/jobkit_env"
fi
