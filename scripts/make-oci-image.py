#!/usr/bin/env python3
"""Write a tiny single-platform OCI image layout (one layer, linux/amd64) to DIR with tag v1.

Used by scripts/demo.sh to have something to push to a local registry without a Docker engine.
Usage: make-oci-image.py DIR
"""
import sys
import hashlib, json, os, tarfile, io, gzip
out = sys.argv[1] if len(sys.argv) > 1 else "oci"
os.makedirs(f"{out}/blobs/sha256", exist_ok=True)
def put(b):
    d=hashlib.sha256(b).hexdigest(); open(f"{out}/blobs/sha256/{d}","wb").write(b); return "sha256:"+d, len(b)
ti=io.BytesIO()
with tarfile.open(fileobj=ti, mode="w") as t:
    data=b"hello\n"; info=tarfile.TarInfo("hello.txt"); info.size=len(data); t.addfile(info, io.BytesIO(data))
raw=ti.getvalue(); gz=gzip.compress(raw)
ld,ls=put(gz)
cfg=json.dumps({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:"+hashlib.sha256(raw).hexdigest()]},"config":{}}).encode()
cd,cs=put(cfg)
man=json.dumps({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":cd,"size":cs},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":ld,"size":ls}]}).encode()
md,ms=put(man)
json.dump({"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":md,"size":ms,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}, open(f"{out}/index.json","w"))
open(f"{out}/oci-layout","w").write('{"imageLayoutVersion":"1.0.0"}')
