"""Open3D's own pictures of a cloud, made the way the PointAD authors' scripts make them.

A reference for parity checks and speed comparisons of :mod:`anomalib_3d.render`, not a renderer
for models: it needs an OpenGL context (an X display; :func:`headless_display` starts ``Xvfb``
when there is none) and renders one view at a time on the CPU.

What it reproduces (``multi_view/multiview_*.py`` of zqhang/PointAD): a grey (0.7) cloud with
normals estimated by Open3D, rotated for each view and shown in an Open3D ``Visualizer`` window of
``window`` pixels with its default camera (refitted to the rotated cloud), white background,
lighting on, square points of ``point_size`` pixels; the captured image resized to ``image_size``
with PIL's bicubic filter; the point -> pixel correspondence from Open3D's pinhole parameters
(``cv2.projectPoints`` in their code: the same pinhole model without distortion) scaled to
``image_size`` and truncated; visibility = the nearest point per output pixel. Their Eyecandies
script also backs the camera off in steps of ``recede_step`` until every point is in frame.

Their scripts open a fresh window per view. Open3D on a software OpenGL (Mesa llvmpipe, Xvfb)
draws nothing in a second window of the same process, so one window is kept and its geometry
replaced for every view. Adding a geometry alone keeps part of the previous view's camera (the
look-at point); resetting the view point with the bounding box
(``reset_view_point(True)``) gives exactly the camera of a fresh window (checked against one
fresh process per view: the same extrinsics for all nine MVTec views).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ["Open3DViews", "headless_display", "render_like_pointad"]


@contextlib.contextmanager
def headless_display(first_display: int = 90, tries: int = 10) -> Iterator[str]:
    """An X display for Open3D's windows: ``$DISPLAY`` if set, else an ``Xvfb`` started for the block.

    Yields:
        The display name.

    Raises:
        RuntimeError: no display is set and ``Xvfb`` is not installed or does not start (on
            Debian / Ubuntu: ``apt-get install xvfb libgl1-mesa-dri``).
    """
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    if shutil.which("Xvfb") is None:
        msg = "no X display and no Xvfb (apt-get install xvfb libgl1-mesa-dri) for Open3D's windows."
        raise RuntimeError(msg)
    runtime = tempfile.mkdtemp(prefix="xdg-")
    for number in range(first_display, first_display + tries):
        if os.path.exists(f"/tmp/.X11-unix/X{number}") or os.path.exists(f"/tmp/.X{number}-lock"):
            continue
        server = subprocess.Popen(
            ["Xvfb", f":{number}", "-screen", "0", "1280x1280x24", "-nolisten", "tcp"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(50):  # up to 5 s for the socket to appear
            if os.path.exists(f"/tmp/.X11-unix/X{number}") or server.poll() is not None:
                break
            time.sleep(0.1)
        if server.poll() is not None:
            continue
        saved = {key: os.environ.get(key) for key in ("DISPLAY", "XDG_RUNTIME_DIR")}
        os.environ["DISPLAY"] = f":{number}"
        os.environ.setdefault("XDG_RUNTIME_DIR", runtime)
        try:
            yield os.environ["DISPLAY"]
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            server.terminate()
            server.wait(timeout=10)
            shutil.rmtree(runtime, ignore_errors=True)
        return
    shutil.rmtree(runtime, ignore_errors=True)
    msg = f"Xvfb did not start on any of displays :{first_display}..:{first_display + tries - 1}."
    raise RuntimeError(msg)


@dataclass
class Open3DViews:
    """Open3D's renders of one cloud (``V`` views, ``N`` points).

    Attributes:
        images: ``(V, S, S, 3)`` float in ``[0, 1]``: the captures resized to ``image_size`` (PIL bicubic).
        window_images: ``(V, W, W, 3)`` float: the captures at the window size.
        silhouettes: ``(V, S, S)`` bool: the cloud's pixels, from a second capture with the
            lighting off (flat grey 0.7 on white, resized the same way, darker than halfway);
            lit captures are no silhouette: a specular highlight saturates to the background's white.
        uv: ``(V, N, 2)`` float OpenCV pixel coordinates (column, row) in the window.
        correspondence: ``(V, N, 2)`` long output pixel of each point (the authors' formula).
        visible: ``(V, N)`` bool: the nearest point of its output pixel.
    """

    images: np.ndarray
    window_images: np.ndarray
    silhouettes: np.ndarray
    uv: np.ndarray
    correspondence: np.ndarray
    visible: np.ndarray


def _nearest_per_pixel(depth: np.ndarray, pixel: np.ndarray, size: int) -> np.ndarray:
    """``(N,)`` bool: the point of smallest ``depth`` in each of the ``pixel (N, 2)`` cells (ties: lower index)."""
    flat = pixel[:, 1] * size + pixel[:, 0]
    order = np.lexsort((np.arange(depth.shape[0]), depth, flat))
    first = np.ones(order.shape[0], dtype=bool)
    first[1:] = flat[order][1:] != flat[order][:-1]
    visible = np.zeros(depth.shape[0], dtype=bool)
    visible[order[first]] = True
    return visible


def render_like_pointad(
    points: np.ndarray,
    rotations: np.ndarray,
    *,
    window: int = 1024,
    point_size: float = 7.0,
    image_size: int = 336,
    recede_step: float = 0.0,
    normals_radius: float = 0.1,
    normals_max_nn: int = 50,
    normals: np.ndarray | None = None,
) -> Open3DViews:
    """Render ``points`` from every rotation the authors' way (see the module docstring).

    Args:
        points: ``(N, 3)`` the cloud in the object frame (after any sensor-frame turn).
        rotations: ``(V, 3, 3)`` the views, applied to the cloud about its centroid.
        window: the Open3D window's side in pixels (1024 MVTec 3D-AD, 1036 Eyecandies / Real3D-AD).
        point_size: Open3D's ``point_size`` (square side in window pixels).
        image_size: the side of the resized pictures.
        recede_step: the Eyecandies script's camera step (cloud units); 0 = none.
        normals_radius, normals_max_nn: Open3D's hybrid normal search.
        normals: ``(N, 3)`` normals to use instead of Open3D's estimate (speed comparisons).

    Needs a display (wrap the call in :func:`headless_display`).
    """
    import open3d as o3d

    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, dtype=np.float64)))
    cloud.colors = o3d.utility.Vector3dVector(np.full((len(cloud.points), 3), 0.7))
    if normals is None:
        cloud.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=normals_radius, max_nn=normals_max_nn))
    else:
        cloud.normals = o3d.utility.Vector3dVector(np.asarray(normals, dtype=np.float64))
    visualizer = o3d.visualization.Visualizer()
    if not visualizer.create_window(width=window, height=window, visible=False):
        msg = "Open3D could not open a window (is there an X display? see headless_display)."
        raise RuntimeError(msg)
    images, window_images, silhouettes, uvs, correspondences, visibles = [], [], [], [], [], []
    try:
        for rotation in np.asarray(rotations, dtype=np.float64):
            view = o3d.geometry.PointCloud(cloud)
            view.rotate(rotation, center=cloud.get_center())
            visualizer.clear_geometries()
            visualizer.add_geometry(view)
            visualizer.reset_view_point(True)
            option = visualizer.get_render_option()
            option.background_color = np.asarray([1.0, 1.0, 1.0])
            option.light_on = True
            option.point_size = float(point_size)
            option.mesh_show_back_face = True
            control = visualizer.get_view_control()
            if recede_step > 0:
                _recede_until_in_frame(control, np.asarray(view.points), window, recede_step)
            parameters = control.convert_to_pinhole_camera_parameters()
            uv = _project(np.asarray(view.points), parameters)
            capture = np.asarray(visualizer.capture_screen_float_buffer(do_render=True))
            resized = _resize_like_pil(capture, image_size)
            option.light_on = False
            flat = _resize_like_pil(np.asarray(visualizer.capture_screen_float_buffer(do_render=True)), image_size)
            correspondence = (uv * image_size / window).astype(np.int64).clip(0, image_size - 1)
            # Their visibility compares the rotated clouds' z (larger = nearer the camera).
            visible = _nearest_per_pixel(-np.asarray(view.points)[:, 2], correspondence, image_size)
            images.append(resized)
            window_images.append(capture.astype(np.float32))
            silhouettes.append(flat.mean(axis=-1) < 0.85)
            uvs.append(uv)
            correspondences.append(correspondence)
            visibles.append(visible)
    finally:
        visualizer.destroy_window()
    return Open3DViews(np.stack(images), np.stack(window_images), np.stack(silhouettes), np.stack(uvs),
                       np.stack(correspondences), np.stack(visibles))


def _resize_like_pil(capture: np.ndarray, size: int) -> np.ndarray:
    """A float capture as their scripts store it (8 bits) and resize it (PIL bicubic), back in ``[0, 1]``."""
    from PIL import Image

    as_bytes = np.clip(capture * 255.0, 0, 255).astype(np.uint8)
    resized = Image.fromarray(as_bytes).resize((size, size), Image.BICUBIC)
    return np.asarray(resized, dtype=np.float32) / 255.0


def _project(points: np.ndarray, parameters: object) -> np.ndarray:
    """``(N, 2)`` OpenCV pixel coordinates of ``points`` through Open3D's pinhole parameters."""
    extrinsic = np.asarray(parameters.extrinsic)
    intrinsic = np.asarray(parameters.intrinsic.intrinsic_matrix)
    camera = points @ extrinsic[:3, :3].T + extrinsic[:3, 3]
    pixels = camera @ intrinsic.T
    return pixels[:, :2] / pixels[:, 2:3]


def _recede_until_in_frame(control: object, points: np.ndarray, window: int, step: float) -> None:
    """Back the camera off by ``step`` until every point projects into the window (at least once)."""
    for _ in range(100_000):
        parameters = control.convert_to_pinhole_camera_parameters()
        extrinsic = np.array(parameters.extrinsic)
        extrinsic[2, 3] += step
        parameters.extrinsic = extrinsic
        control.convert_from_pinhole_camera_parameters(parameters, allow_arbitrary=True)
        uv = _project(points, control.convert_to_pinhole_camera_parameters())
        if bool(((uv >= 0) & (uv < window)).all()):
            return
    msg = "the camera never got the whole cloud into the frame."
    raise RuntimeError(msg)
