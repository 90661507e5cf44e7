"""The web demo: handlers refuse bad input with a message; a bad port is one line before anything is
announced; a real browser generates images; the server answers 50 concurrent requests, bad ones among them,
and stays up; the HTTP API answers malformed calls with a message, never a stack trace."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers.system_packages import chromium_path, require_system_package

from vaediff import serve as serve_module
from vaediff.cli import main
from vaediff.errors import ConfigError
from vaediff.families import train_run
from vaediff.serve import Demo, Limits, serve

TINY = {"block_out_channels": [8, 16, 16], "norm_num_groups": 4, "attention_head_dim": 8, "sampling_steps": 4}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    diffusion = train_run("diffusion", root / "digits", options={"model": TINY},
                          train_options={"max_steps": 4, "batch_size": 32, "eval_images": 64}, progress=False)
    vae = train_run("cvae", root / "cvae", train_options={"max_steps": 30}, progress=False)
    return [diffusion.run_dir, vae.run_dir]


def test_handlers_answer_bad_input_with_a_message(runs):
    demo = Demo(runs, Limits(max_images=8, max_steps=10))
    picture, status = demo.generate("digits", "3: 3", "4", "dpm", "4", "2", "0")
    assert picture.shape == (3 * 30, 3 * (4 * 29 + 1), 3) and "4 class 3" in status
    bad = [
        (("digits", "3", "100", "dpm", "4", "2", "0"), "between 1 and 8"),
        (("digits", "12", "4", "dpm", "4", "2", "0"), "class must be between 0 and 9"),
        (("digits", "3", "4", "dpm", "0", "2", "0"), "steps must be between 1 and 10"),
        (("digits", "3", "4", "dpm", "4", "nan", "0"), "guidance"),
        (("digits", "3", "four", "dpm", "4", "2", "0"), "whole number"),
        (("digits", "3", "4", "euler", "4", "2", "0"), "sampler"),
        (("../../etc", "3", "4", "dpm", "4", "2", "0"), "unknown run"),
    ]
    for args, message in bad:
        picture, status = demo.generate(*args)
        assert picture is None and message in status, (args, status)
    picture, status = demo.explore("cvae", 1.0, -0.5, "7: 7")
    assert picture is not None and "direction 1" in status
    picture, status = demo.interpolate("cvae", "1: 1", "7: 7")
    assert picture.shape[1] > picture.shape[0] and "1 → 7" in status
    assert demo.explore("digits", 0, 0, "1")[0] is None


def test_handlers_refuse_dicts_and_lists_by_name(runs):
    """What an HTTP API client can send where the page sends text: each refused with the input's name."""
    demo = Demo(runs, Limits(max_images=8, max_steps=10))
    good = ("digits", "3", "4", "dpm", "4", "2", "0")
    bad = [
        (0, {"name": "digits"}, "run must be a run name, got a dict"),
        (1, ["3"], "class must be a class number, got a list"),
        (2, {"n": 4}, "number of images must be a whole number, got a dict"),
        (3, ["dpm"], "sampler must be a sampler name, got a list"),
        (4, [4], "steps must be a whole number, got a list"),
        (5, {"g": 2}, "guidance must be a number, got a dict"),
        (6, [0], "seed must be a whole number, got a list"),
    ]
    for index, value, message in bad:
        args = good[:index] + (value,) + good[index + 1:]
        picture, status = demo.generate(*args)
        assert picture is None and status == f"⚠️ {message}", (args, status)
    assert demo.explore("cvae", [1], 0, "7")[1] == "⚠️ direction 1 must be a number, got a list"
    assert demo.interpolate("cvae", "1", {"c": 7})[1] == "⚠️ second class must be a class number, got a dict"


@pytest.mark.parametrize("port", [0, 65536, 99999, -1])
def test_port_out_of_range_is_one_line_before_anything(port, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["serve", "some-run", "--port", str(port)])
    assert stop.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and "argument --port: must be between 1 and 65,535" in err and "Traceback" not in err
    with pytest.raises(ConfigError, match="--port must be between 1 and 65,535"):
        serve(["some-run"], port=port)  # the library checks too, before loading any run
    assert capsys.readouterr().out == ""


def test_port_in_use_is_refused_before_announcing(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        message = f"port {port} on 127.0.0.1 is in use; pass --port N"
        with pytest.raises(ConfigError) as refused:
            serve(["some-run"], port=port)  # refused before the run (which does not exist) is loaded
        assert str(refused.value) == message
        assert main(["serve", "some-run", "--port", str(port)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"vaediff: error: {message}\n"


def test_port_taken_during_loading_is_one_line(monkeypatch, capsys):
    """The race: the port is free when checked, taken before gradio binds it."""

    class LateApp:
        def launch(self, **options):
            raise OSError(f"Cannot find empty port in range: {options['server_port']}-{options['server_port']}.")

    monkeypatch.setattr(serve_module, "Demo", lambda run_dirs, limits: None)
    monkeypatch.setattr(serve_module, "build_app", lambda demo: LateApp())
    monkeypatch.setattr(serve_module, "_refusals", lambda app: {})
    port = _free_port()
    with pytest.raises(ConfigError, match=f"^port {port} on 127.0.0.1 is in use; pass --port N$"):
        serve(["some-run"], port=port)
    assert capsys.readouterr().out == ""  # nothing announced


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(runs, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("log") / "serve.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    process = subprocess.Popen([sys.executable, "-m", "vaediff", "serve", *map(str, runs), "--port", str(port),
                                "--max-images", "16", "--max-steps", "10"],
                               stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"server exited: {log.read_text()}")
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail(f"server did not start: {log.read_text()}")
    yield url, process, log
    process.terminate()
    process.wait(timeout=20)


def _fill(page, elem_id: str, value: str) -> None:
    box = page.locator(f"#{elem_id} textarea, #{elem_id} input").first
    box.fill(value)


@pytest.fixture
def chromium() -> Path:
    path = chromium_path()
    require_system_package("chromium", path is not None)
    return path


@pytest.mark.slow
def test_browser_generates_images_and_survives_bad_input(chromium, server, tmp_path):
    from playwright.sync_api import sync_playwright

    url, process, _ = server
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"])
        page = browser.new_page(viewport={"width": 1200, "height": 1000})
        page.goto(url, wait_until="networkidle")
        _fill(page, "label", "7: 7")
        page.keyboard.press("Enter")
        _fill(page, "count", "4")
        page.click("#generate")
        page.wait_for_function("document.querySelector('#status') && "
                               "document.querySelector('#status').innerText.includes('images/s')", timeout=60000)
        assert "4 class 7" in page.inner_text("#status")
        image = page.locator("#picture img").first
        image.wait_for(timeout=30000)
        size = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
        assert size == [3 * (4 * 29 + 1), 3 * 30]  # 4 images of 28 px in a row, 1 px gutters, 3x zoom
        page.screenshot(path=str(tmp_path / "generated.png"))

        _fill(page, "count", "500")
        page.click("#generate")
        page.wait_for_function("document.querySelector('#status').innerText.includes('between 1 and 16')",
                               timeout=60000)
        _fill(page, "count", "2")
        page.click("#generate")
        page.wait_for_function("document.querySelector('#status').innerText.includes('2 class 7')", timeout=60000)
        page.screenshot(path=str(tmp_path / "after_bad_input.png"))
        browser.close()
    assert process.poll() is None
    assert (tmp_path / "generated.png").stat().st_size > 10000


def test_fifty_concurrent_requests_all_answered(server):
    from gradio_client import Client

    url, process, _ = server
    client = Client(url, verbose=False)
    requests = []
    for i in range(50):
        count = "3" if i % 3 else "999"  # every third request is over the limit
        steps = "2" if i % 5 else "0"     # every fifth has zero steps
        requests.append(("digits", f"{i % 10}", count, "ddim", steps, "1.5", str(i)))
    with ThreadPoolExecutor(max_workers=25) as pool:
        answers = list(pool.map(lambda args: client.predict(*args, api_name="/generate"), requests))
    assert len(answers) == 50
    for args, (picture, status) in zip(requests, answers, strict=True):
        valid = args[2] == "3" and args[4] == "2"
        assert (picture is not None) == valid, status
        assert ("images/s" in status) if valid else status.startswith("⚠️")
    assert process.poll() is None
    assert client.predict("digits", "1", "1", "dpm", "2", "1", "0", api_name="/generate")[0] is not None


def _post(url: str, path: str, body) -> tuple[int, dict]:
    request = urllib.request.Request(url + "gradio_api/" + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def _call(url: str, api_name: str, data: list) -> tuple[str, object]:
    """POST /gradio_api/call/NAME, then read the event stream: ("complete" or "error", its data)."""
    status, answer = _post(url, f"call/{api_name}", {"data": data})
    assert status == 200, answer
    with urllib.request.urlopen(f"{url}gradio_api/call/{api_name}/{answer['event_id']}", timeout=60) as stream:
        text = stream.read().decode()
    assert "Traceback" not in text, text
    event = text.split("event: ")[-1]
    kind, _, payload = event.partition("\ndata: ")
    return kind.strip(), json.loads(payload)


def test_http_api_answers_malformed_calls_with_a_message(server):
    url, process, log = server
    logged = log.stat().st_size
    good = ["digits", "3", "2", "dpm", "2", "1", "0"]
    kind, (picture, status) = _call(url, "generate", good)
    assert kind == "complete" and picture is not None and "2 class 3" in status

    kind, (picture, status) = _call(url, "generate", ["digits", {"label": 3}, [2], "dpm", "2", "1", "0"])
    assert kind == "complete" and picture is None and status == "⚠️ number of images must be a whole number, got a list"
    kind, (_, status) = _call(url, "generate", [["digits"], "3", "2", "dpm", "2", "1", "0"])
    assert status == "⚠️ run must be a run name, got a list"

    for data in (good[:2], good + ["extra"], []):
        kind, answer = _call(url, "generate", data)
        assert kind == "error" and answer["error"].startswith(f"generate takes 7 inputs (run, class, number of "
                                                              f"images (1-16), sampler, steps, guidance scale, "
                                                              f"seed), got {len(data)}"), answer

    for path in ("call/nosuch", "call/v2/nosuch"):
        status, answer = _post(url, path, {"data": good})
        assert status == 404 and answer == {"error": "unknown API name /nosuch; this demo offers /generate, "
                                                     "/interpolate"}, (path, answer)
    status, answer = _post(url, "call/v2/generate", {"colour": "red"})
    assert status == 400 and "colour" in answer["error"] and "\n" not in answer["error"], answer
    status, answer = _post(url, "queue/join", {"data": good, "fn_index": 99, "session_hash": "test"})
    assert status == 404 and answer == {"error": "unknown fn_index 99"}, answer
    status, answer = _post(url, "run/generate", {"data": good})  # would skip the queue: closed
    assert status == 404 and "queue" in answer["detail"], answer

    assert process.poll() is None
    assert "Traceback" not in log.read_text()[logged:]
