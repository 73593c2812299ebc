#!/usr/bin/env bash
# Obtain Fashion-MNIST the Debian way when possible; otherwise torchvision downloads it at run time.
set -euo pipefail
if [ -n "${S2DNAS_DATA:-}" ] || [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null || \
    echo "note: could not install dataset-fashion-mnist; torchvision will try to download" >&2
fi
