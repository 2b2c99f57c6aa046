"""KerasTuner search over width, depth, dropout and learning rate."""

from __future__ import annotations

import keras
import keras_tuner
import tensorflow_transform as tft
from tfx import v1 as tfx

from models import model, training

TRIALS_KEY = "max_trials"
EPOCHS_KEY = "epochs"


# Called by the Tuner component.
def tuner_fn(fn_args: tfx.components.FnArgs) -> tfx.components.TunerFnResult:
    """Bayesian optimisation of the model's hyperparameters on validation AUC.

    fn_args.custom_config: max_trials (search budget), epochs per trial (full passes over train).
    """
    config = fn_args.custom_config or {}
    keras.utils.set_random_seed(int(config.get("seed", 7)))
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    spec = training.model_inputs_spec(tf_transform_output)
    batch_size = int(config.get("batch_size", 256))
    epochs = int(config.get(EPOCHS_KEY, 2))

    # Read once, held in memory when it fits (models/training.train_split): every trial trains
    # `epochs` full passes over the training split, as the Trainer counts them.
    split = training.train_split(
        fn_args.train_files,
        fn_args.data_accessor,
        tf_transform_output,
        batch_size,
        seed=int(config.get("seed", 7)),
        max_in_memory_bytes=int(config.get(training.TRAIN_MEMORY_KEY, training.DEFAULT_TRAIN_MEMORY_MIB)) * 2**20,
    )
    counts, steps = split.counts, split.steps
    tuner = keras_tuner.BayesianOptimization(
        hypermodel=lambda hp: model.build_model(hp, spec, output_bias=counts.base_logit),
        objective=keras_tuner.Objective("val_auc", direction="max"),
        max_trials=int(config.get(TRIALS_KEY, 3)),
        hyperparameters=model.get_hyperparameters(),
        seed=int(config.get("seed", 7)),
        directory=fn_args.working_dir,
        project_name="waferflow_tuning",
        overwrite=True,
    )
    # The validation split, each die exactly once per evaluation, held in memory after the first.
    evaluation = training.validation_dataset(fn_args.eval_files, fn_args.data_accessor, tf_transform_output, batch_size)
    return tfx.components.TunerFnResult(
        tuner=tuner,
        fit_kwargs={
            "x": split.dataset,
            "validation_data": evaluation,
            "epochs": epochs,
            "steps_per_epoch": steps,
        },
    )
