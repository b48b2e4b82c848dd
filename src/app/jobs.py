"""One function per entry point: a configuration in, the job done, its result out.

train.py -> ``run_training``, eval.py -> ``run_evaluation``, export.py -> ``run_export``, and the
offline flow preprocess.py / infer.py / postprocess.py -> ``run_preprocess`` / ``run_inference`` /
``run_postprocess``, predict.py -> ``run_prediction``, visualize.py -> ``run_visualization``. Each sets
up the device, builds what the job needs (``builders``) and makes one call into the engine, weights or
deploy packages.
"""
import contextlib
import os
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import mindspore as ms

from . import modelarts
from .builders import (data_record, describe_transform, eval_dataset, eval_transform, image_policy, inference_net,
                       kernel_impl, learning_rates, model_from_config, prediction_class_names, prepare_data,
                       resolve_transform, train_dataset, train_step)
from .config import Config, ConfigError, effective_recipe, is_remote, save_config
from .device import init_device
from ..choices import EXTENSIONS
from ..data import DatasetError
from ..deploy.export import export_network
from ..deploy.offline import postprocess, preprocess, run_inference as infer_files
from ..deploy.predict import classify_files
from ..deploy.visualize import visualize
from ..data.files import find_images
from ..data.transforms import UndecodableImage, create_transforms
from ..engine.evaluate import evaluate
from ..engine.logger import get_logger, start_log_file
from ..engine.run_checkpoints import RunCheckpoints, new_run_meta
from ..engine.trainer import TrainJob, fit, loss_bound, sum_over_ranks
from ..models import export_formulation, model_cfg
from ..weights.checkpoint import CheckpointError, data_differences, load_model_weights, read_checkpoint, stored_data
from ..utils.files import FolderLock, OutputFolderError, check_free_space, check_writable


def run_training(cfg: Config, stop: Optional[Callable[[], int]] = None) -> Dict[str, float]:
    """train.py: build the job described by ``cfg``, resume it if asked, train, return the results.
    ``stop`` returns the signal number of a pending stop request (``signals.StopSignals``), else 0.
    A ModelArts job (``run_modelarts``) trains on local copies and uploads its outputs (``modelarts``)."""
    if cfg.run_modelarts:
        modelarts.require_moxing()
    rank, world = init_device(cfg.device_target, cfg.device_id, cfg.graph_mode, cfg.distribute, cfg.device_num)
    ms.set_seed(cfg.seed)
    remote_train_url = None
    if cfg.run_modelarts:
        cfg, remote_train_url = modelarts.localise(cfg, training=True)
    cfg, transform_sources = resolve_transform(cfg)
    with own_output_folder(cfg.train_url, rank, world):
        checkpoints, uploader = modelarts.run_checkpoints(cfg.train_url, cfg.keep_last, rank, remote_train_url)
        try:
            return _train(cfg, transform_sources, rank, world, checkpoints, stop)
        finally:
            if uploader:
                uploader.upload()


def _train(cfg: Config, transform_sources: Dict[str, str], rank: int, world: int, checkpoints: RunCheckpoints,
           stop: Optional[Callable[[], int]]) -> Dict[str, float]:
    removed = checkpoints.remove_stale_temporaries()
    resume_path = checkpoints.find_resume(cfg.resume)
    if resume_path is None and checkpoints.existing():  # every rank stops alike
        raise ConfigError(f"{cfg.train_url!r} already holds checkpoints; pass --resume auto to continue that "
                          f"run or choose another --train_url")
    log = get_logger("train", cfg.train_url, rank, hold_file=True)  # train.log appears once the start is accepted
    for path in removed:
        log.info("removed %s, left by an interrupted checkpoint write", path)
    for path, reason in checkpoints.unreadable:
        log.info("--resume auto skips %s: %s", path, reason)
    log_recipe(cfg, log, transform_sources)
    job = build_train_job(cfg, rank, world, checkpoints, log, stop)
    if rank == 0:
        periodic = min(cfg.keep_last, -(-job.total_epochs // cfg.save_every))
        check_free_space(cfg.train_url, checkpoints.room_needed(job.step, job.model, periodic + 2), "output folder",
                         "train_url", f"keeping {periodic + 2} checkpoints ({periodic} epoch_NNNN.ckpt, last.ckpt, "
                                      f"best.ckpt)")
    meta = new_run_meta()
    if cfg.resume == "auto" and resume_path is None:
        log.info("--resume auto: no checkpoint in %s, starting a new run", cfg.train_url)
    if resume_path:
        meta = checkpoints.restore(job.step, job.model, resume_path)
        where = (f"in epoch {int(meta['epoch']) + 1} after batch {int(meta['batch'])} of {job.steps_per_epoch}"
                 if meta["batch"] else f"after epoch {int(meta['epoch'])}")
        log.info("resumed from %s %s (step %d)", resume_path, where, meta["step"])
    elif cfg.start_epoch:
        meta.update(epoch=cfg.start_epoch, step=cfg.start_epoch * job.steps_per_epoch)
        job.step.optimizer.global_step.set_data(ms.Tensor([cfg.start_epoch * len(job.lrs) // job.total_epochs],
                                                          ms.int32))
        log.info("start_epoch %d: a new run starting at epoch %d of the schedule", cfg.start_epoch,
                 cfg.start_epoch + 1)
    if rank == 0:  # the start is accepted: the first write into train_url. A resumed run keeps the first run's
        # config.yaml and records its own beside it
        name = "config.yaml" if resume_path is None else time.strftime("config-resumed-%Y%m%d-%H%M%S.yaml")
        save_config(cfg, os.path.join(cfg.train_url, name))
    start_log_file(log)
    if meta["epoch"] >= job.total_epochs:
        log.info("the run in %s already finished its %d epochs: nothing left to train", cfg.train_url,
                 job.total_epochs)
        return {"best_top1": meta["best_top1"], "best_epoch": meta["best_epoch"]}
    log.info("%s: %d ranks x batch %d x accumulation %d, %d steps/epoch, epochs %d..%d, amp %s, %s kernels",
             cfg.arch, world, cfg.batch_size, cfg.accumulation_step, job.steps_per_epoch, int(meta["epoch"]) + 1,
             job.total_epochs, cfg.amp_level, kernel_impl(cfg))
    return fit(job, meta)


@contextlib.contextmanager
def own_output_folder(folder: str, rank: int, world: int):
    """Rank 0 proves ``folder`` writable and holds its lock for the run; if it cannot, every rank stops.
    A folder this created is removed again when the run stops before writing into it (a refused start)."""
    lock, problem, created = None, None, not os.path.isdir(folder)
    if rank == 0:
        try:
            check_writable(folder, "output folder", "train_url")
            lock = FolderLock(folder, "train_url").acquire()
        except OutputFolderError as err:
            problem = err
    if sum_over_ranks([problem is not None], world)[0]:
        raise problem or OutputFolderError(f"rank 0 cannot use the output folder {folder!r}; see its log")
    try:
        yield
    except BaseException:
        if lock is not None:
            lock.release()
            lock = None
            if created:
                with contextlib.suppress(OSError):  # only an empty folder goes
                    os.rmdir(folder)
        raise
    finally:
        if lock is not None:
            lock.release()


def build_train_job(cfg: Config, rank: int, world: int, checkpoints: RunCheckpoints, log,
                    stop: Optional[Callable[[], int]] = None) -> TrainJob:
    """Model, datasets, schedule and train step of the configured run."""
    root = prepare_data(cfg, rank)
    checkpoints.record_data(data_record(cfg, root))
    model = model_from_config(cfg, training=True)
    if cfg.pretrained:
        loaded = load_model_weights(model, cfg.pretrained, cfg.use_ema, cfg.arch,
                                    new_classifier=model_cfg(cfg.arch)["classifier"] + ".")
        if loaded.reinitialised:
            log.info("the pretrained classifier has another class count: %s re-initialised",
                     ", ".join(loaded.reinitialised))
    first = train_dataset(cfg, root, epoch=0, rank=rank, world=world)
    updates_per_epoch = first.get_dataset_size() // cfg.accumulation_step
    if updates_per_epoch == 0:
        raise DatasetError(f"the training split has fewer images than one update of {cfg.accumulation_step} x "
                           f"{cfg.batch_size}; lower batch_size or accumulation_step")
    steps_per_epoch = updates_per_epoch * cfg.accumulation_step  # an epoch ends with a whole update
    lrs = learning_rates(cfg, updates_per_epoch, world, log)
    main = rank == 0
    return TrainJob(
        model=model, step=train_step(cfg, model, lrs), eval_net=inference_net(cfg, model_from_config(cfg)),
        train_data=lambda epoch: whole_updates(first if epoch == 0 else train_dataset(cfg, root, epoch, rank, world),
                                               steps_per_epoch),
        val_data=eval_dataset(cfg, root, rank, world), lrs=lrs, steps_per_epoch=steps_per_epoch,
        total_epochs=cfg.epochs + cfg.cooldown_epochs, checkpoints=checkpoints, log=log,
        images_per_step=cfg.batch_size * world, world=world, with_ema=cfg.ema_decay > 0, log_every=cfg.log_every,
        eval_every=cfg.eval_every, save_every=cfg.save_every,
        metrics_path=os.path.join(cfg.train_url, "metrics.jsonl") if main else None,
        curves_path=os.path.join(cfg.train_url, "training_curves.png") if main else None,
        stop=stop, max_overflow_fraction=cfg.max_overflow_fraction, overflow_window=cfg.overflow_window,
        loss_bound=loss_bound(cfg.num_classes))


def whole_updates(data, steps: int):
    """The training pipeline cut to ``steps`` batches, so that an epoch ends with a whole update (with
    gradient accumulation); it keeps the pipeline's bad-image policy."""
    if data.get_dataset_size() == steps:
        return data
    limited = data.take(steps)
    limited.bad_image_policy = data.bad_image_policy
    return limited


def log_recipe(cfg: Config, log, sources: Optional[Dict[str, str]] = None) -> None:
    """The effective recipe: every value the config file does not write, and where it comes from (``sources``:
    keys resolved from elsewhere than their schema origin, such as the transform from the model's default cfg)."""
    log.info("config %s; values not written in it:", cfg.file or "(none)")
    for source, values in effective_recipe(cfg, sources=sources).items():
        log.info("  %s: %s", source, ", ".join(values))


def _no_weights(what: str) -> ConfigError:
    return ConfigError(f"no weights to {what}: pass --pretrained <checkpoint.ckpt>")


def trained_for(cfg: Config, root: Optional[str] = None) -> Optional[List[int]]:
    """Refuse ``pretrained`` unless it was trained for this configuration's evaluation transform and,
    given a dataset root, for the classes of its val split; returns the model output of each dataset
    label when the checkpoint has the same classes in another order. Converted official checkpoints
    record nothing (ImageNet-1k in the official order) and pass."""
    recorded = stored_data(read_checkpoint(cfg.pretrained, meta_only=True))
    if recorded is None:
        return None
    current = data_record(cfg, root, "val")
    if root is None:
        recorded.pop("classes", None)
    transform = [k for k in current if k != "classes" and recorded.get(k) != current[k]]
    if transform:
        hint = " ".join(f"--{k} {','.join(map(str, recorded[k])) if isinstance(recorded[k], list) else recorded[k]}"
                        for k in ("image_size", "crop_pct", "mean", "std") if k in transform)
        fix = f"pass {hint}"
        differences = data_differences({k: recorded.get(k) for k in transform}, {k: current[k] for k in transform})
        raise CheckpointError(f"{cfg.pretrained!r} does not fit this configuration: {differences}; {fix}")
    if root is None or recorded.get("classes") in (None, current["classes"]):
        return None
    if sorted(recorded["classes"]) != sorted(current["classes"]):
        raise CheckpointError(f"{cfg.pretrained!r} does not fit the classes of {os.path.join(root, 'val')!r}: "
                              f"{data_differences({'classes': recorded['classes']}, {'classes': current['classes']})}; "
                              f"evaluate it on the classes it was trained for")
    return [recorded["classes"].index(name) for name in current["classes"]]


def run_evaluation(cfg: Config, results_to: Optional[str] = None) -> Dict[str, float]:
    """eval.py: the configured model with ``pretrained`` weights on the validation split, at
    ``eval_amp_level`` precision; the result says which weights (model or EMA) were evaluated, and
    whether the classes were matched by name (``trained_for``). With ``results_to`` (a folder, or an
    object-store one on ModelArts) the results are also written there as JSON."""
    if not cfg.pretrained:
        raise _no_weights("evaluate")
    if is_remote(results_to) and not cfg.run_modelarts:
        raise ConfigError(f"--train_url {results_to!r} is an object-store URL: add --run_modelarts True (ModelArts, "
                          f"copied through moxing) or give a local folder")
    if cfg.run_modelarts:
        modelarts.require_moxing()
    rank, world = init_device(cfg.device_target, cfg.device_id, cfg.graph_mode, cfg.distribute, cfg.device_num)
    checkpoint = cfg.pretrained  # as given (an obs:// path on ModelArts)
    if results_to and rank == 0 and not is_remote(results_to):
        check_writable(results_to, "results folder", "train_url")
    if cfg.run_modelarts:
        cfg, _ = modelarts.localise(cfg, training=False)
    cfg, sources = resolve_transform(cfg, cfg.pretrained)
    root = prepare_data(cfg, rank)
    columns = trained_for(cfg, root)
    net = model_from_config(cfg)
    loaded = load_model_weights(net, cfg.pretrained, use_ema=cfg.use_ema, arch=cfg.arch)
    result = evaluate(inference_net(cfg, net), eval_dataset(cfg, root, rank, world), distributed=world > 1,
                      columns=columns)
    result = {**result, "ema": loaded.ema, "classes_by_name": columns is not None,
              "transform": describe_transform(cfg, sources)}
    if results_to and rank == 0:
        record = {"arch": cfg.arch, "checkpoint": checkpoint, "weights": "EMA" if loaded.ema else "model",
                  "top1": result["top1"], "top5": result["top5"], "loss": result["loss"], "images": result["count"],
                  "eval_amp_level": cfg.eval_amp_level, "transform": result["transform"],
                  "time": time.strftime("%Y-%m-%d %H:%M:%S")}
        result["results_file"] = modelarts.write_results(results_to, record, cfg.cache_dir)
    return result


def run_export(cfg: Config, batch_size: int = 1) -> str:
    """export.py: the configured model with ``pretrained`` weights, in its export-safe form, written as
    ``file_format`` for batches of ``batch_size`` (offline inference runs one image per call; the config's
    batch_size is training's); image_size comes from the configuration and must be the one the checkpoint
    was trained for."""
    if not cfg.pretrained:
        raise _no_weights("export")
    form = export_formulation("native" if cfg.kernel_impl == "auto" else cfg.kernel_impl, cfg.file_format)
    init_device(cfg.device_target, cfg.device_id)
    cfg, _ = resolve_transform(cfg, cfg.pretrained)
    trained_for(cfg)
    net = model_from_config(cfg, impl=form, reads_images=False)
    load_model_weights(net, cfg.pretrained, use_ema=cfg.use_ema, arch=cfg.arch)
    return export_network(inference_net(cfg, net), cfg.file_format, cfg.file_name or cfg.arch, batch_size,
                          cfg.image_size, fold_batch_norm=form.fold_batch_norm)


def run_preprocess(cfg: Config) -> Dict[str, int]:
    """preprocess.py: the validation images through the model's evaluation transform, one file each."""
    cfg, _ = resolve_transform(cfg)
    return preprocess(prepare_data(cfg, rank=0), cfg.preprocess_path, eval_transform(cfg), image_policy(cfg))


def run_inference(cfg: Config) -> int:
    """infer.py: an exported MINDIR (MindSpore) or ONNX (onnxruntime) model over the preprocessed inputs."""
    if cfg.file_format not in ("MINDIR", "ONNX"):
        raise ConfigError("infer.py runs MINDIR or ONNX exports; pass --file_format MINDIR or ONNX")
    if cfg.file_format == "MINDIR":
        init_device(cfg.device_target, cfg.device_id)
    return infer_files((cfg.file_name or cfg.arch) + EXTENSIONS[cfg.file_format], cfg.preprocess_path,
                       cfg.result_path)


def run_postprocess(cfg: Config) -> Dict[str, float]:
    """postprocess.py: top-1 / top-5 of the inference results against the preprocessed labels."""
    return postprocess(cfg.preprocess_path, cfg.result_path)


def run_prediction(cfg: Config, images: List[str], topk: int = 5, batch_size: int = 8) -> Dict[str, object]:
    """predict.py: the ``topk`` classes of each image named by ``images`` (files, folders, glob patterns)
    with the ``pretrained`` weights, in batches of ``batch_size`` (the config's batch_size is training's).
    Returns {"classes_from", "results"}: one result per file (see ``deploy.predict.classify_files``), plus
    one with an error for each name that matches no file."""
    if not cfg.pretrained:
        raise _no_weights("predict with")
    cfg, _ = resolve_transform(cfg, cfg.pretrained)
    trained_for(cfg)
    paths, missing = find_images(images)
    init_device(cfg.device_target, cfg.device_id, cfg.graph_mode)
    net = model_from_config(cfg)
    load_model_weights(net, cfg.pretrained, use_ema=cfg.use_ema, arch=cfg.arch)
    names, source = prediction_class_names(cfg, cfg.pretrained)
    (transform,) = create_transforms(eval_transform(cfg), max_image_pixels=cfg.max_image_pixels)
    results: List[dict] = [{"file": spec, "error": problem} for spec, problem in missing]
    results += classify_files(inference_net(cfg, net), paths, transform, names, topk, batch_size)
    return {"classes_from": source, "results": results}


def run_visualization(cfg: Config, image: str, out: str, layers: Optional[List[int]] = None,
                      node: Optional[Tuple[int, int]] = None, target_class: Optional[int] = None) -> dict:
    """visualize.py: neighbour drawings and Grad-CAM maps of the blocks ``layers`` (1-based; default: the
    last block of each quarter of the network) for ``image``, written to ``out``, centred on ``node`` (default:
    each block's most activated one), for ``target_class`` (default: the predicted one); returns the summary."""
    if not cfg.pretrained:
        raise _no_weights("visualise")
    cfg, _ = resolve_transform(cfg, cfg.pretrained)
    init_device(cfg.device_target, cfg.device_id, mode=ms.PYNATIVE_MODE)  # hooks need PyNative mode
    net = model_from_config(cfg)
    load_model_weights(net, cfg.pretrained, use_ema=cfg.use_ema, arch=cfg.arch)
    check_writable(out, "output folder", "out")
    params = eval_transform(cfg)
    (transform,) = create_transforms(params, max_image_pixels=cfg.max_image_pixels)
    try:
        with open(image, "rb") as handle:
            pixels = transform(handle.read())
    except UndecodableImage as err:
        raise ConfigError(f"--image {image}: {err}") from None
    display = np.clip(pixels.transpose(1, 2, 0) * np.array(params.std) + np.array(params.mean), 0, 1)
    depth = len(net.graphers())
    layers = layers or sorted({max(1, round(depth * q / 4)) for q in (1, 2, 3, 4)})
    names, _ = prediction_class_names(cfg, cfg.pretrained)
    return visualize(net, pixels, display, layers, out, names, node=tuple(node) if node else None,
                     target=target_class)
