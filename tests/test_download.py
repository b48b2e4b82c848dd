"""convert_checkpoint.py --download against a local HTTP server (127.0.0.1, a thread that stops with the
test): the release file is fetched, resumed after an interrupted transfer, checked, cached and
converted; without a server the error is one line naming the URL."""
import hashlib
import http.server
import os
import socket
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tools import torch_reference as ref  # noqa: E402
import convert_checkpoint  # noqa: E402
from src.app.cli import run_cli  # noqa: E402
from src.models import create_model, model_cfg, registry  # noqa: E402
from src.weights.checkpoint import load_model_weights  # noqa: E402
from src.weights.download import DownloadError, download  # noqa: E402

ARCH = "vig_nano_gelu"
NAME = "vig_nano_99.9.pth"


class Server:
    """Serves one file with Range support; ``drop_first`` cuts the first transfer off half-way."""

    def __init__(self, data: bytes, drop_first: bool = False):
        self.data, self.drop = data, drop_first
        self.requests = []  # the Range header of each GET (None without one)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                if self.path != f"/{NAME}":
                    self.send_error(404)
                    return
                spec = self.headers.get("Range")
                server.requests.append(spec)
                start = int(spec[len("bytes="):].split("-")[0]) if spec else 0
                if start >= len(server.data):
                    self.send_response(416)
                    self.end_headers()
                    return
                body = server.data[start:]
                self.send_response(206 if spec else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.drop:
                    server.drop = False
                    self.wfile.write(body[:len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.timeout = 5
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/{NAME}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def release_file(tmp_path_factory):
    """An official-format state dict (torch.save) of the vig_nano_gelu architecture."""
    net = create_model(ARCH, kernel_impl="native")
    graphers = [c for _, c in net.cells_and_names() if type(c).__name__ == "Grapher"]
    official = ref.build_isotropic(channels=64, depth=6, ks=[g.graph_spec.k for g in graphers],
                                   dilations=[g.graph_spec.dilation for g in graphers])
    path = tmp_path_factory.mktemp("release") / NAME
    torch.save(official.state_dict(), path)
    data = path.read_bytes()
    return {"data": data, "sha256": hashlib.sha256(data).hexdigest(), "state": official.state_dict()}


@pytest.fixture
def release(monkeypatch, tmp_path, release_file):
    """The arch's default cfg points at ``set_url(url)``; the cache is a temporary folder."""
    monkeypatch.setenv("VIG_WEIGHTS_CACHE", str(tmp_path / "cache"))
    cfg = registry._DEFAULT_CFGS[ARCH]

    def set_url(url, sha256=release_file["sha256"]):
        monkeypatch.setitem(cfg, "url", url)
        monkeypatch.setitem(cfg, "sha256", sha256)
    return set_url


def test_download_resumes_after_an_interruption_checks_caches_and_converts(release, release_file, tmp_path, capsys):
    data = release_file["data"]
    with Server(data, drop_first=True) as server:
        release(server.url)
        convert_checkpoint.main(["--arch", ARCH, "--download", "--dst", str(tmp_path / "nano.ckpt")])
        assert server.requests == [None, f"bytes={len(data) // 2}-"]  # resumed where the cut-off left it
    out = capsys.readouterr()
    assert "wrote" in out.out and NAME in out.err  # the progress line names the file
    cached = tmp_path / "cache" / NAME
    assert cached.read_bytes() == data and not (tmp_path / "cache" / (NAME + ".part")).exists()
    net = create_model(ARCH, kernel_impl="native")
    load_model_weights(net, str(tmp_path / "nano.ckpt"), arch=ARCH)
    np.testing.assert_array_equal(net.parameters_dict()["backbone.5.1.fc2.0.weight"].asnumpy(),
                                  release_file["state"]["backbone.5.1.fc2.0.weight"].numpy())
    backbone = create_model(ARCH, kernel_impl="native", features_only=True, out_indices=(0, 2))
    load_model_weights(backbone, str(tmp_path / "nano.ckpt"), arch=ARCH)  # head and blocks 3-5 are skipped
    np.testing.assert_array_equal(backbone.parameters_dict()["backbone.2.0.fc1.0.weight"].asnumpy(),
                                  release_file["state"]["backbone.2.0.fc1.0.weight"].numpy())
    # the server is gone: the cached file is used as it is
    convert_checkpoint.main(["--arch", ARCH, "--download", "--dst", str(tmp_path / "again.ckpt")])
    assert (tmp_path / "again.ckpt").exists()


def test_a_partial_file_is_resumed_by_the_next_command(release, release_file, tmp_path):
    data = release_file["data"]
    with Server(data, drop_first=True) as server:
        with pytest.raises(DownloadError, match="interrupted 1 times.*run the same command again to resume"):
            download(server.url, release_file["sha256"], folder=str(tmp_path), attempts=1, progress=False)
        assert os.path.getsize(tmp_path / (NAME + ".part")) == len(data) // 2
        path = download(server.url, release_file["sha256"], folder=str(tmp_path), progress=False)
        assert server.requests[-1] == f"bytes={len(data) // 2}-"
    assert open(path, "rb").read() == data


def test_a_file_that_does_not_check_out_is_deleted(release_file, tmp_path):
    with Server(release_file["data"]) as server:
        with pytest.raises(DownloadError, match="SHA-256 is .*the release file's starts with 00000000.*deleted"):
            download(server.url, "00000000", folder=str(tmp_path), progress=False)
        with pytest.raises(DownloadError, match="has .* bytes, the release file 12"):
            download(server.url, num_bytes=12, folder=str(tmp_path), progress=False)
    assert os.listdir(tmp_path) == []


def test_no_server_is_one_line_naming_the_url(release, tmp_path, capsys):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/{NAME}"
    release(url)
    with pytest.raises(SystemExit) as stop:
        run_cli(lambda: convert_checkpoint.main(["--arch", ARCH, "--download", "--dst", str(tmp_path / "x.ckpt")]))
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"cannot download {url}" in err and "refused" in err and "--src" in err
    assert not (tmp_path / "x.ckpt").exists()


def test_archs_without_a_release_file_say_so(capsys):
    with pytest.raises(SystemExit):
        run_cli(lambda: convert_checkpoint.main(["--arch", ARCH, "--download", "--dst", "unused.ckpt"]))
    assert "no downloadable release file is known for vig_nano_gelu" in capsys.readouterr().err
    assert model_cfg("pvig_s_224_gelu")["url"].endswith("/pyramid-vig/pvig_s_82.1.pth.tar")
    svig = model_cfg("svig_ti_224_gelu")  # a Git LFS file: the whole digest and size are known
    assert len(svig["sha256"]) == 64 and svig["num_bytes"] == 115_820_289
    assert model_cfg("graphconvnet_ti")["url"] is None
