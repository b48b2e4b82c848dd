"""``mox.file`` on local folders: obs://bucket/key is $MOXING_STUB_ROOT/bucket/key."""
import os
import shutil

UPLOADS = []  # every copy to obs://: (destination url, sorted names in the source's folder at that moment)


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
    if dst_url.startswith("obs://"):
        UPLOADS.append((dst_url, sorted(os.listdir(os.path.dirname(_local(src_url)) or "."))))


def remove(url, recursive=False):
    path = _local(url)
    if recursive:
        shutil.rmtree(path)
    else:
        os.remove(path)


def copy_parallel(src_url, dst_url, threads=16):
    src, dst = _local(src_url), _local(dst_url)
    shutil.copytree(src, dst, dirs_exist_ok=True)
