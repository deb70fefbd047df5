"""Where archives are kept: a small protocol (put/get/stat/delete/list/presign_get/sha256) with
a local-folder backend (`api.storage.local`) and an S3-compatible one for AWS S3, Cloudflare R2
and MinIO (`api.storage.s3`, imported on its own so that botocore loads only when needed)."""

from api.storage.base import ObjectInfo, Storage, StorageError
from api.storage.local import LocalStorage

__all__ = ["LocalStorage", "ObjectInfo", "Storage", "StorageError"]
