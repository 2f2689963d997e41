"""What an annotator sees and hears on the labeling pages of the media types, in a real headless Chromium.

Audio clips (tones made by tests/audio_signals.py) and pictures are uploaded to the stack's S3, ingested by the ingest
flow, and each task's labeling page is opened as an annotator opens it. The page must have fetched and decoded the
object through Label Studio's storage connection (its /tasks/<id>/resolve/ URL, redirected to a presigned S3 URL):
an audio clip's media element reports the clip's duration and plays when the Play button is clicked; a picture's
`<img>` has the picture's own width. A screenshot of each page is saved in $LABELFLOW_SCREENSHOTS.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.object_store import ObjectStore
from labelflow.tasks.ingest import read_project_record
from labelflow.tasks.spec import ProjectSpec, load_spec
from tests import audio_signals
from tests.browser.test_labeling_pages import (  # noqa: F401 - labeling_page is a fixture
    LabelingPage,
    labeling_page,
    submitted_result,
)
from tests.integration.test_ingest import all_tasks, write_spec

pytestmark = [pytest.mark.integration, pytest.mark.browser]

MEDIA_SECONDS = 20.0  # fetching and decoding a clip, after the page has rendered
PLAY_SECONDS = 10.0
DURATION_TOLERANCE = 0.05  # seconds; WAV durations are exact, decoders may pad compressed formats a little
RATE = 16000

# Label Studio's Audio tag plays through an <audio> element it may create in JavaScript and never attach to the
# page; this script, run before the page's own, keeps every media element the page creates so the test can read them.
RECORD_MEDIA_ELEMENTS = """
(() => {
  const created = (window.__labelflowMedia = []);
  const keep = (element) => {
    if (element instanceof HTMLMediaElement) created.push(element);
    return element;
  };
  const createElement = Document.prototype.createElement;
  Document.prototype.createElement = function (...args) { return keep(createElement.apply(this, args)); };
  const NativeAudio = window.Audio;
  window.Audio = function (...args) { return keep(new NativeAudio(...args)); };
  window.Audio.prototype = NativeAudio.prototype;
})();
"""
# Every media element of the page (attached or not) whose source is `arguments[0]`, as plain numbers.
READ_MEDIA_ELEMENTS = """
const elements = new Set([...(window.__labelflowMedia || []), ...document.querySelectorAll('audio, video')]);
return [...elements]
  .filter((element) => (element.currentSrc || element.src).includes(arguments[0]))
  .map((element) => ({
    tag: element.tagName.toLowerCase(),
    attached: element.isConnected,
    duration: Number.isFinite(element.duration) ? element.duration : String(element.duration),
    current_time: element.currentTime,
    paused: element.paused,
    ready_state: element.readyState,
    error: element.error && element.error.code,
  }));
"""
# How the page fetched the resources whose URL contains `arguments[0]` (img, fetch, xmlhttprequest, ...).
FETCHED_RESOURCES = """
return performance.getEntriesByType('resource')
  .filter((entry) => entry.name.includes(arguments[0]))
  .map((entry) => entry.initiatorType);
"""
# What the audio controls print, in their text and their (time) input boxes.
CONTROL_TEXTS = """
const controls = document.querySelector('.lsf-audio-tag');
if (!controls) return [];
return [...controls.querySelectorAll('input')].map((box) => box.value).concat([controls.innerText]).join(' ');
"""
# The waveform canvas's ink (share of non-blank pixels) in its left and right halves.
WAVEFORM_INK = """
const canvas = document.querySelector('.lsf-audio-tag canvas');
if (!canvas || !canvas.width) return null;
const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
const ink = [0, 0], total = [0, 0];
for (let i = 0; i < pixels.length; i += 4) {
  const half = ((i / 4) % canvas.width) < canvas.width / 2 ? 0 : 1;
  total[half] += 1;
  if (pixels[i + 3] > 0 && pixels[i] + pixels[i + 1] + pixels[i + 2] < 600) ink[half] += 1;
}
return [ink[0] / total[0], ink[1] / total[1]];
"""


@dataclass(frozen=True)
class MediaProject:
    """A project made by the ingest flow from uploaded objects: its spec, Label Studio id, and tasks by object key."""

    spec: ProjectSpec
    project_id: int
    tasks: dict[str, dict[str, Any]]


@pytest.fixture
def ingest_objects(
    object_store: ObjectStore, label_studio: LabelStudioClient, unique_name: str, tmp_path: Path, prefect_api: str
) -> Iterator[Callable[..., MediaProject]]:
    """Upload objects under a folder and ingest it with the ingest flow; afterwards the project and objects go."""
    from labelflow.flows.ingest import ingest

    source, state = f"{unique_name}-src", f"{unique_name}-state"
    titles: list[str] = []

    def run(task: str, objects: dict[str, bytes], settings: dict[str, Any]) -> MediaProject:
        object_store.ensure_bucket(source)
        for key, data in objects.items():
            object_store.put_bytes(source, f"{task}/{key}", data)
        body = {
            "name": f"{task} {unique_name}",
            "source": f"s3://{source}/{task}/",
            "state": f"s3://{state}/labelflow/",
            "task": task,
            "dataset": {"name": unique_name},
            **settings,
        }
        titles.append(body["name"])
        spec_path = write_spec(tmp_path, body)
        assert ingest(str(spec_path))["tasks_created"] == len(objects)
        spec = load_spec(spec_path)
        recorded = read_project_record(object_store, spec)  # the project the ingest made, not a title lookup
        assert recorded is not None
        project_id = int(recorded["project_id"])
        tasks = {t["data"]["source_key"].removeprefix(f"{task}/"): t for t in all_tasks(label_studio, project_id)}
        assert set(tasks) == set(objects)
        return MediaProject(spec, project_id, tasks)

    yield run
    for title in titles:
        for _ in range(5):  # every project of the title, including a half-created duplicate
            project_id = label_studio.find_project(title)
            if project_id is None:
                break
            label_studio.delete_project(project_id)
    for bucket in (source, state):
        if object_store.bucket_exists(bucket):
            for item in list(object_store.list_objects(bucket)):
                object_store.delete(bucket, item.key)


@pytest.fixture
def media_elements(labeling_page: LabelingPage) -> Iterator[Callable[[int], list[dict[str, Any]]]]:  # noqa: F811
    """Record the media elements of every page opened during the test; read those playing a task's object."""
    driver = labeling_page.driver
    script = driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_MEDIA_ELEMENTS})

    def read(task_id: int) -> list[dict[str, Any]]:
        return driver.execute_script(READ_MEDIA_ELEMENTS, f"/tasks/{task_id}/resolve/")

    yield read
    # The browser is shared by the session's other browser tests: leave their pages as they were.
    driver.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": script["identifier"]})


def clock(seconds: float) -> str:
    """A duration as Label Studio's audio controls print it: hh:mm:ss:mmm."""
    millis = round(seconds * 1000)
    return f"{millis // 3_600_000:02d}:{millis // 60_000 % 60:02d}:{millis // 1000 % 60:02d}:{millis % 1000:03d}"


def tone_then_silence(tone_seconds: float, silent_seconds: float) -> bytes:
    """A WAV clip: a 440 Hz tone, then digital silence (so its waveform is ink on the left, a flat line on the right)."""
    t = np.arange(round(tone_seconds * RATE)) / RATE
    samples = np.concatenate([0.5 * np.sin(2 * np.pi * 440 * t), np.zeros(round(silent_seconds * RATE))])
    return audio_signals.encode(samples, RATE, "WAV")


def wait_for_media(
    labeling_page: LabelingPage,  # noqa: F811
    media_elements: Callable[[int], list[dict[str, Any]]],
    task_id: int,
) -> list[dict[str, Any]]:
    """The task's media elements once they have all loaded the clip and report its duration."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    def loaded(_: Any) -> list[dict[str, Any]] | bool:
        elements = media_elements(task_id)
        return elements if elements and all(isinstance(e["duration"], float | int) for e in elements) else False

    try:
        return WebDriverWait(labeling_page.driver, MEDIA_SECONDS, poll_frequency=0.2).until(loaded)
    except TimeoutException:
        logs = [entry["message"] for entry in labeling_page.driver.get_log("browser")]
        raise AssertionError(
            f"task {task_id}'s clip never loaded: media elements {media_elements(task_id)}, browser log {logs}"
        ) from None


def test_audio_classification_page_loads_the_clip_with_its_duration_and_plays_it(
    labeling_page: LabelingPage,  # noqa: F811
    ingest_objects: Callable[..., MediaProject],
    media_elements: Callable[[int], list[dict[str, Any]]],
    screenshots: Path,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    clips = {"tone/a440.wav": tone_then_silence(1.0, 1.0), "noise/hiss.wav": audio_signals.noise(1.0, RATE, "WAV")}
    project = ingest_objects("audio-classification", clips, {"labels": ["tone", "noise"]})
    task = project.tasks["tone/a440.wav"]
    assert task["data"]["audio_duration"] == pytest.approx(2.0, abs=DURATION_TOLERANCE)
    view = labeling_page.open(project.project_id, task["id"], shows="noise")

    elements = wait_for_media(labeling_page, media_elements, task["id"])
    assert all(element["duration"] == pytest.approx(2.0, abs=DURATION_TOLERANCE) for element in elements), elements
    assert all(element["error"] is None for element in elements), elements
    # The controls print the clip's length, known only once the browser has decoded the clip.
    WebDriverWait(labeling_page.driver, MEDIA_SECONDS).until(
        lambda driver: clock(2.0) in driver.execute_script(CONTROL_TEXTS), "the controls never showed the duration"
    )
    # The waveform is drawn from the decoded samples: the tone inks the left half, the silence leaves a thin line.
    ink = WebDriverWait(labeling_page.driver, MEDIA_SECONDS).until(
        lambda driver: (found := driver.execute_script(WAVEFORM_INK)) and found[0] > 0 and found
    )
    assert ink[0] > 4 * ink[1], f"waveform ink left/right: {ink}"

    labeling_page.screenshot(screenshots, "audio-classification")
    play = view.find_element(By.CSS_SELECTOR, ".lsf-timeline-controls button[aria-label='Play']")
    play.click()
    playing = WebDriverWait(labeling_page.driver, PLAY_SECONDS, poll_frequency=0.1).until(
        lambda _: [e for e in media_elements(task["id"]) if e["current_time"] > 0.2 and not e["paused"]],
        "the clip never played after a click on Play",
    )
    assert all(0.2 < element["current_time"] <= 2.0 for element in playing), playing
    labeling_page.screenshot(screenshots, "audio-classification-playing")


# One clip per format annotators may be given (the browser decodes each itself), and one stored without an extension.
FORMAT_CLIPS = {
    "tone/clip.flac": (audio_signals.tone(1.5, 660, 44100, 2, "FLAC"), 1.5),
    "tone/clip.ogg": (audio_signals.tone(1.25, 550, 22050, 1, "OGG"), 1.25),
    "noise/clip.mp3": (audio_signals.noise(1.0, RATE, "MP3"), 1.0),
    "tone/no-extension": (audio_signals.tone(0.75, 880, 8000, 1, "WAV"), 0.75),
}
COMPRESSED_TOLERANCE = 0.08  # seconds; MP3 encoders pad the first and last frames


def test_every_audio_format_reaches_the_page_with_its_duration(
    labeling_page: LabelingPage,  # noqa: F811
    ingest_objects: Callable[..., MediaProject],
    media_elements: Callable[[int], list[dict[str, Any]]],
) -> None:
    project = ingest_objects(
        "audio-classification", {key: data for key, (data, _) in FORMAT_CLIPS.items()}, {"labels": ["tone", "noise"]}
    )
    durations: dict[str, list[Any]] = {}
    for key in FORMAT_CLIPS:
        task = project.tasks[key]
        labeling_page.open(project.project_id, task["id"], shows="noise")
        elements = wait_for_media(labeling_page, media_elements, task["id"])
        durations[key] = [element["duration"] for element in elements]
    expected = {key: seconds for key, (_, seconds) in FORMAT_CLIPS.items()}
    for key, shown in durations.items():
        assert all(math.isclose(d, expected[key], abs_tol=COMPRESSED_TOLERANCE) for d in shown), (key, shown)


def test_transcription_page_shows_the_waveform_and_the_transcript_box_and_a_typed_transcript_is_stored(
    labeling_page: LabelingPage,  # noqa: F811
    ingest_objects: Callable[..., MediaProject],
    media_elements: Callable[[int], list[dict[str, Any]]],
    label_studio: LabelStudioClient,
    screenshots: Path,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    clips = {"en/1.flac": audio_signals.tone(1.5, 330, RATE, 1, "FLAC"), "en/2.wav": tone_then_silence(0.5, 0.5)}
    project = ingest_objects("transcription", clips, {"options": {"language": "en"}})
    task = project.tasks["en/1.flac"]
    view = labeling_page.open(project.project_id, task["id"], shows="Transcript")
    elements = wait_for_media(labeling_page, media_elements, task["id"])
    assert all(element["duration"] == pytest.approx(1.5, abs=DURATION_TOLERANCE) for element in elements), elements
    WebDriverWait(labeling_page.driver, MEDIA_SECONDS).until(
        lambda driver: clock(1.5) in driver.execute_script(CONTROL_TEXTS), "the controls never showed the duration"
    )
    waveform = view.find_element(By.CSS_SELECTOR, ".lsf-audio-tag canvas")
    assert waveform.is_displayed() and waveform.size["width"] > 300
    transcript_box = view.find_element(By.CSS_SELECTOR, "textarea[name=label]")
    assert transcript_box.is_displayed() and transcript_box.get_attribute("value") == ""
    assert transcript_box.get_attribute("placeholder") == "Write exactly what is said"
    # The box sits under the waveform, as annotators read it: listen, then write.
    assert transcript_box.rect["y"] > waveform.rect["y"] + waveform.rect["height"]

    written = "please turn the lights off in the kitchen"
    transcript_box.send_keys(written)
    assert transcript_box.get_attribute("value") == written
    labeling_page.screenshot(screenshots, "transcription")
    labeling_page.submit()

    result = submitted_result(label_studio, task["id"])
    assert [(item["from_name"], item["to_name"], item["value"]) for item in result] == [
        ("label", "audio", {"text": [written]})
    ]
    label, answer, problems = project.spec.task_type.parse_answer(result, task["data"], project.spec)
    assert label is not None and answer is not None and answer["text"] == written and problems == []


def test_image_captioning_page_shows_the_loaded_picture_and_the_caption_box(
    labeling_page: LabelingPage,  # noqa: F811
    ingest_objects: Callable[..., MediaProject],
    label_studio: LabelStudioClient,
    screenshots: Path,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    pictures = {"红色方块.png": picture(320, 200, "red", "PNG"), "green-bar.jpg": picture(240, 180, "green", "JPEG")}
    project = ingest_objects("image-captioning", pictures, {})
    task = project.tasks["红色方块.png"]
    view = labeling_page.open(project.project_id, task["id"], shows="Caption")

    def loaded_image(_: Any) -> Any:
        images = view.find_elements(By.CSS_SELECTOR, ".lsf-image img")
        loaded = images and images[0].get_property("complete") and images[0].get_property("naturalWidth")
        return images[0] if loaded else False

    image = WebDriverWait(labeling_page.driver, MEDIA_SECONDS, poll_frequency=0.2).until(
        loaded_image, "the picture never loaded"
    )
    # The browser decoded the uploaded picture itself: its natural size is this picture's (the other is 240 x 180).
    assert (image.get_property("naturalWidth"), image.get_property("naturalHeight")) == (320, 200)
    # The editor fetched the picture's bytes from the task's resolve URL (and shows them from a blob: URL).
    fetched = labeling_page.driver.execute_script(FETCHED_RESOURCES, f"/tasks/{task['id']}/resolve/")
    assert {"fetch", "xmlhttprequest"} & set(fetched), fetched
    frame = view.find_element(By.CSS_SELECTOR, ".lsf-image")
    assert frame.is_displayed() and frame.size["width"] > 300
    caption_box = view.find_element(By.CSS_SELECTOR, "textarea[name=label]")
    assert caption_box.is_displayed() and caption_box.get_attribute("value") == ""
    assert caption_box.get_attribute("placeholder") == "Describe the image in one or two sentences"
    assert caption_box.rect["y"] >= frame.rect["y"] + frame.rect["height"]  # the caption box under the picture

    written = "白色背景上的一个红色圆形。"
    caption_box.send_keys(written)
    labeling_page.screenshot(screenshots, "image-captioning")
    labeling_page.submit()

    result = submitted_result(label_studio, task["id"])
    assert [(item["to_name"], item["value"]) for item in result] == [("image", {"text": [written]})]
    label, answer, problems = project.spec.task_type.parse_answer(result, task["data"], project.spec)
    assert label is not None and answer is not None and answer["text"] == written and problems == []


def picture(width: int, height: int, color: str, image_format: str) -> bytes:
    """A white picture of this size with a coloured disc in the middle."""
    image = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(image).ellipse((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=color)
    buffer = io.BytesIO()
    image.save(buffer, image_format)
    return buffer.getvalue()
