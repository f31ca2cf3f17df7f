#!/bin/sh
# Entry point of the e2e node image: `node.sh etcd` runs a one-member etcd 3.4; `node.sh patroni`
# runs Patroni for the node named $NODE_NAME (pg1, pg2), its config rendered from patroni.yml.tmpl.
set -eu
case "${1:-}" in
    etcd)
        exec etcd --name etcd --data-dir /tmp/etcd \
            --listen-client-urls http://0.0.0.0:2379 --advertise-client-urls http://etcd:2379 \
            --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
            --initial-cluster etcd=http://127.0.0.1:2380
        ;;
    patroni)
        : "${NODE_NAME:?set NODE_NAME}"
        sed "s/@NODE@/$NODE_NAME/g" /opt/e2e/patroni.yml.tmpl > /tmp/patroni.yml
        exec patroni /tmp/patroni.yml
        ;;
    *)
        echo "usage: node.sh etcd|patroni" >&2
        exit 2
        ;;
esac
