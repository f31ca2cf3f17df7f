#!/bin/sh
# Patroni post_bootstrap hook (runs once, on the node that ran initdb, with a superuser DSN as $1):
# the application role and database that the poolers and the client load use.
set -eu
psql "$1" -v ON_ERROR_STOP=1 -q \
    -c "CREATE ROLE ollyscale LOGIN PASSWORD 'ollyscale'" \
    -c "CREATE DATABASE ollyscale OWNER ollyscale"
