#!/usr/bin/env bash
# `new-inventory.sh DEST [PASSWORD_FILE]`: copy inventories/example to DEST (for example
# inventories/production) with a vault of its own. The example's vault is encrypted with a
# password README prints, so it is never copied: DEST gets a new vault.yml holding the same
# names with random values, encrypted with PASSWORD_FILE (default .vault_pass), which is
# made (mode 0600, a random password) when it does not exist, and kept when it does. The
# values exist in plain text only inside the pipe to ansible-vault.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { printf '==> new-inventory: %s\n' "$*"; }
fail() { printf 'new-inventory: %s\n' "$*" >&2; exit 2; }

[ $# -ge 1 ] && [ $# -le 2 ] || fail "usage: $0 DEST [PASSWORD_FILE]"
dest=$1
password_file=${2:-.vault_pass}
[ -e "$dest" ] && fail "$dest exists already; choose a new directory (nothing was changed)"

vault=ansible-vault
[ -x "$repo/.venv/bin/ansible-vault" ] && vault=$repo/.venv/bin/ansible-vault
command -v "$vault" >/dev/null || fail "ansible-vault not found: run scripts/bootstrap.sh first"

random() { python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; }

if [ -e "$password_file" ]; then
  say "encrypting with the existing password file $password_file"
else
  (umask 077 && random > "$password_file")
  say "made $password_file (mode 0600, a random password): keep it out of git, and back it up"
fi

mkdir -p "$(dirname "$dest")"
cp -r "$repo/inventories/example" "$dest"
rm -f "$dest/group_vars/app_servers/vault.yml"
{
  printf '%s\n' '---' \
    '# Secrets of the app servers, encrypted with ansible-vault. group_vars/app_servers/main.yml' \
    '# refers to them by name (asgi_app_secrets). Edit with:' \
    "#   ansible-vault edit --vault-password-file $password_file $dest/group_vars/app_servers/vault.yml"
  printf 'vault_database_password: %s\n' "$(random)"
  printf 'vault_session_secret: %s\n' "$(random)"
} | ANSIBLE_NOCOLOR=1 "$vault" encrypt --vault-password-file "$password_file" \
  --output "$dest/group_vars/app_servers/vault.yml" - >/dev/null
say "copied inventories/example to $dest, with a new vault (random values) in $dest/group_vars/app_servers/vault.yml"
say "next: fill in $dest/hosts.yml and group_vars; set the secrets with"
say "  ansible-vault edit --vault-password-file $password_file $dest/group_vars/app_servers/vault.yml"
