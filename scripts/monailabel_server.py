#!/usr/bin/env python3
"""Start a real MONAI Label server with an exported cxr-distill bundle, on this project's pinned stack.

    .venv/bin/python scripts/monailabel_server.py --bundle outputs/export/cxr_distill_student_classification

then, from any HTTP client::

    curl -F "file=@image.dcm" "http://127.0.0.1:8000/infer/cxr_distill_student_classification?output=json"

What it does, each step MONAI Label's own:

1. the app: MONAI Label's ``monaibundle`` sample app, copied from the installed ``monailabel`` package by its
   own ``monailabel apps --download --name monaibundle`` (nothing is fetched) into ``--app``
   (default ``outputs/monailabel/monaibundle``) unless that folder is already an app;
2. the model: the bundle folder is linked as ``<app>/model/<bundle name>`` (a ``_v<version>.zip`` is
   extracted there instead), where the monaibundle app looks for local bundles;
3. the server: ``monailabel start_server --app <app> --studies <studies> --conf models <bundle name>
   --conf zoo_source github --host 127.0.0.1 --port 8000``, run by MONAI Label's own ``monailabel.main``
   in this Python (the ``.venv/bin/monailabel`` wrapper runs whatever ``python`` is first on PATH).
   ``--conf zoo_source github``: with the default ``monaihosting`` source the app asks the Model Zoo's
   server for every model, a local bundle included, and fails offline. Arguments after ``--`` are passed
   to ``start_server`` as they are (``-- --conf preload true``).

Two compatibility shims, applied in this process only, because monailabel 0.8.5 (the release on PyPI)
imports packages that do not work with this project's pinned versions; both are no-ops where the real
thing imports:

* ``pydicom._storage_sopclass_uids``: monailabel 0.8.5 imports ``pydicom_seg`` (for DICOM SEG files, which
  a classifier never writes), and pydicom-seg 0.4.1, its last release, imports that module, which
  pydicom 3 removed (it was a deprecated alias of ``pydicom.uid`` since pydicom 2.3). The shim is that
  alias again. The bundle's DICOM reader needs pydicom 3, so a server environment with pydicom 2 is no way
  out: the bundle's code runs inside the server. MONAI Label's main branch has replaced pydicom-seg by
  highdicom; a release with that change makes this shim unnecessary.
* ``torchvision.utils``: monailabel imports ``make_grid`` / ``save_image`` for its debug image writers,
  and PyPI's torchvision builds for torch 2.13 do not load beside the project's CPU torch
  ("operator torchvision::nms does not exist"). Where torchvision cannot be imported, a stand-in whose two
  functions raise ``NotImplementedError`` is used; classification never calls them.

A refused image (not a chest radiograph, undecodable, constant ...: the bundle's loader raises a
``CXRDataError``) is answered ``422 Unprocessable Entity`` with the reason as the ``detail`` and logged in one
line naming what the client sent (``the uploaded file 'knee.dcm'``), not the temporary copy MONAI Label
reads (``/tmp/tmpgaygbqet.dcm``), and with advice that a MONAI Label user can follow (export the bundle with
``--set require_chest=false``) instead of the loader's ``require_chest=False`` (:func:`explain_refused_images`;
without it, MONAI Label 0.8.5 answers ``500 Internal Server Error`` and logs a traceback).

The server runs until stopped (Ctrl-C, or SIGTERM to its process id); it listens on 127.0.0.1 unless
``--host`` says otherwise (MONAI Label has no authentication by default).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import types
import zipfile
from collections.abc import Sequence
from pathlib import Path

MODEL_ZOO_SOURCE_WITHOUT_NETWORK = "github"  # any source but "monaihosting" uses a local bundle as it is
SAMPLE_APP = "monaibundle"


def install_compatibility_shims() -> list[str]:
    """Make monailabel 0.8.5 importable beside pydicom 3 and without torchvision; returns the shims applied."""
    applied = []
    try:
        import pydicom._storage_sopclass_uids  # noqa: F401  (pydicom < 3)
    except ImportError:
        import pydicom.uid

        sys.modules["pydicom._storage_sopclass_uids"] = pydicom.uid
        applied.append("pydicom._storage_sopclass_uids = pydicom.uid")
    try:
        import torchvision.utils  # noqa: F401
    except Exception:  # not installed, or a CUDA build that fails to load beside the CPU torch
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]  # a half-imported torchvision must not shadow the stand-in
        stand_in, utils = types.ModuleType("torchvision"), types.ModuleType("torchvision.utils")

        def unavailable(*args, **kwargs):
            raise NotImplementedError("torchvision is not available in this environment (see "
                                      "scripts/monailabel_server.py): MONAI Label's debug image writers need it")

        utils.make_grid = utils.save_image = unavailable
        stand_in.utils = utils
        sys.modules["torchvision"], sys.modules["torchvision.utils"] = stand_in, utils
        applied.append("torchvision.utils stand-in (make_grid, save_image raise)")
    return applied


# the loader's advice names its Python parameter; a MONAI Label user changes the served bundle's config instead
_LOADER_ADVICE = "pass require_chest=False to load it anyway"
SERVER_ADVICE = ("to classify such images anyway, serve a bundle exported with --set require_chest=false "
                 "(scripts/export_bundle.py)")


def _data_error(error: BaseException | None) -> BaseException | None:
    """The bundle's data error (``CXRDataError``, by name: the bundle's code may be the exported copy) behind
    ``error``, or None."""
    seen: list[BaseException] = []
    while error is not None and all(error is not e for e in seen):
        if any(cls.__name__ == "CXRDataError" for cls in type(error).__mro__):
            return error
        seen.append(error)
        error = error.__cause__ or error.__context__
    return None


def refusal_message(error: BaseException, sent: str) -> str:
    """The loader's reason for refusing an image, naming ``sent`` (what the client sent) instead of the path the
    server read, with advice for the server's user."""
    problem = getattr(error, "problem", None) or str(error)
    return f"{sent}: {problem.replace(_LOADER_ADVICE, SERVER_ADVICE)}"


def explain_refused_images() -> None:
    """Answer a request whose image the bundle's loader refuses with 422 and its reason, and log it in one line
    naming the uploaded file (MONAI Label keeps only its suffix for the temporary copy it reads)."""
    import logging

    import monailabel.endpoints.infer as infer
    from fastapi import HTTPException

    original = infer.run_inference
    if getattr(original, "explains_refused_images", False):
        return
    logger = logging.getLogger("cxr-distill")

    def run_inference(background_tasks, model, image="", session_id="", params="{}", file=None, label=None,
                      output=None):
        try:
            return original(background_tasks, model, image, session_id, params, file, label, output)
        except Exception as error:
            refused = _data_error(error)
            if refused is None:
                raise
            if file is not None:
                sent = f"the uploaded file {file.filename!r}" if file.filename else "the uploaded file"
            else:
                sent = f"image {image!r}" if image else f"the image of session {session_id!r}"
            message = refusal_message(refused, sent)
            logger.error("refused: %s", message)
            raise HTTPException(status_code=422, detail=message) from None

    run_inference.explains_refused_images = True
    infer.run_inference = run_inference


def bundle_name(bundle: Path) -> str:
    """The model name MONAI Label serves: the bundle folder's name, or the zip's without ``_v<version>``."""
    if bundle.suffix == ".zip":
        with zipfile.ZipFile(bundle) as archive:
            roots = {name.split("/", 1)[0] for name in archive.namelist()}
        if len(roots) != 1:
            raise SystemExit(f"error: {bundle}: a Model Zoo zip holds one folder <name>/, this one {sorted(roots)}")
        return roots.pop()
    return bundle.name


def check_bundle(bundle: Path) -> None:
    """Refuse what MONAI Label would refuse later and less clearly."""
    if not bundle.exists():
        raise SystemExit(f"error: {bundle}: no such bundle (export one first: .venv/bin/python "
                         "scripts/export_bundle.py --ckpt outputs/student/model.pt --out outputs/monailabel_export)")
    if bundle.is_dir():
        for required in ("configs/inference.json", "configs/metadata.json", "models/model.pt"):
            if not (bundle / required).is_file():
                raise SystemExit(f"error: {bundle}: not a bundle folder ({required} is missing)")
    elif bundle.suffix != ".zip":
        raise SystemExit(f"error: {bundle}: give a bundle folder or its _v<version>.zip")
    if "classification" not in bundle_name(bundle).lower():
        raise SystemExit(f"error: {bundle}: MONAI Label's monaibundle app treats a bundle whose name lacks "
                         "'classification' as segmentation; export it with such a --name")


def prepare_app(app: Path) -> Path:
    """The monaibundle sample app at ``app``, copied from the installed monailabel package when absent."""
    if (app / "main.py").is_file():
        return app
    if app.exists() and any(app.iterdir()):
        raise SystemExit(f"error: {app}: exists and is not a MONAI Label app (no main.py); choose another --app")
    from monailabel.main import Main

    app.parent.mkdir(parents=True, exist_ok=True)
    if app.exists():
        app.rmdir()
    # `monailabel apps --download --name monaibundle --output <parent>`: a copy from the installed package
    Main(actions="apps").action_apps(argparse.Namespace(download=True, name=SAMPLE_APP, output=str(app.parent),
                                                        prefix=None))
    copied = app.parent / SAMPLE_APP
    if copied != app:
        copied.rename(app)
    return app


def place_bundle(bundle: Path, app: Path) -> str:
    """Put the bundle where the monaibundle app looks: ``<app>/model/<name>``; returns the name."""
    name = bundle_name(bundle)
    target = app / "model" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or (bundle.suffix == ".zip" and target.is_dir()):
        target.unlink() if target.is_symlink() else shutil.rmtree(target)
    elif target.exists() and target.resolve() != bundle.resolve():
        raise SystemExit(f"error: {target} exists and is not a link to {bundle}: remove it, or use another --app")
    if bundle.suffix == ".zip":
        with zipfile.ZipFile(bundle) as archive:
            archive.extractall(target.parent)
    elif not target.exists():
        target.symlink_to(bundle.resolve(), target_is_directory=True)
    return name


def start_server_argv(app: Path, studies: Path, name: str, host: str, port: int, extra: Sequence[str]) -> list[str]:
    return ["start_server", "--app", str(app), "--studies", str(studies), "--conf", "models", name,
            "--conf", "zoo_source", MODEL_ZOO_SOURCE_WITHOUT_NETWORK, "--host", host, "--port", str(port), *extra]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Arguments after -- go to `monailabel start_server` unchanged.")
    parser.add_argument("--bundle", type=Path, required=True,
                        help="an exported bundle folder (scripts/export_bundle.py) or its _v<version>.zip")
    parser.add_argument("--app", type=Path, default=Path("outputs/monailabel/monaibundle"),
                        help="the monaibundle app folder; made from the installed monailabel package when absent "
                             "(default: %(default)s)")
    parser.add_argument("--studies", type=Path, default=Path("outputs/monailabel/studies"),
                        help="MONAI Label's datastore folder; created when absent (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)

    check_bundle(args.bundle)
    shims = install_compatibility_shims()
    try:
        from monailabel.main import Main
    except ImportError as error:
        raise SystemExit(f"error: MONAI Label cannot be imported ({type(error).__name__}: {error}); install it with "
                         "bash scripts/setup_env.sh --tests (or --monailabel)") from None
    app = prepare_app(args.app.resolve())
    name = place_bundle(args.bundle, app)
    server_argv = start_server_argv(app, args.studies.resolve(), name, args.host, args.port, extra)
    print(f"cxr-distill: monailabel {' '.join(server_argv)}", flush=True)
    if shims:
        print(f"cxr-distill: compatibility shims (see scripts/monailabel_server.py): {'; '.join(shims)}", flush=True)
    print(f"cxr-distill: model {name}: POST an image to http://{args.host}:{args.port}/infer/{name}?output=json",
          flush=True)
    explain_refused_images()
    sys.argv = ["monailabel", *server_argv]
    Main().run()
    return 0


if __name__ == "__mp_main__":
    # a uvicorn worker process (start_server --workers N) imports this file as __mp_main__: it needs the shims too
    install_compatibility_shims()

if __name__ == "__main__":
    sys.exit(main())
