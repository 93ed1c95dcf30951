#!/bin/sh
# Runs during the build with the build secret at /run/secrets/greeting_key
# and writes the page the function serves. Only the secret's SHA-256
# fingerprint goes into the image, never the secret.
set -eu
secret=/run/secrets/greeting_key
fingerprint=$(sha256sum "$secret" | cut -c1-16)
mkdir -p /www
cat >/www/index.html <<PAGE
Hello from hello-secret!
Built by fnbuilder (build ${BUILD_ID}) with a sealed build secret.
sha256(greeting_key)[:16] = ${fingerprint}
PAGE
echo "render.sh: page written for build ${BUILD_ID}"
