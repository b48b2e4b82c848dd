"""``mox.file`` on local folders: obs://bucket/key is $MOXING_STUB_ROOT/bucket/key."""
import os
import shutil

UPLOADS = []  # (destination url, sorted relative paths copied) of every copy_parallel to obs://


def _local(url: str) -> str:
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    if scheme != "obs":
        raise ValueError(f"stand-in moxing only knows obs://, got {url}")
    return os.path.join(os.environ["MOXING_STUB_ROOT"], rest)


def File(url, mode="r"):  # noqa: N802 (moxing's name)
    return open(_local(url), mode)


def exists(url):
    return os.path.exists(_local(url))


def list_directory(url):
    return sorted(os.listdir(_local(url)))


def copy(src_url, dst_url):
    os.makedirs(os.path.dirname(_local(dst_url)) or ".", exist_ok=True)
    shutil.copyfile(_local(src_url), _local(dst_url))


def copy_parallel(src_url, dst_url, threads=16):
    src, dst = _local(src_url), _local(dst_url)
    shutil.copytree(src, dst, dirs_exist_ok=True)
    if dst_url.startswith("obs://"):
        copied = sorted(os.path.relpath(os.path.join(root, name), src) for root, _, names in os.walk(src)
                        for name in names)
        UPLOADS.append((dst_url, copied))
