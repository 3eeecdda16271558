"""Tabular classification / regression: LightGBM, an MLP, a linear model, a random forest, an RBF SVM, or a
weighted average of them; calibrated probabilities.

model.type: lightgbm (default) | mlp | linear | forest | svm | ensemble. `ensemble_weights` maps members to
weights, e.g. `{lightgbm: 1, linear: 1, forest: 1, svm: 1}` (a list is read as [lightgbm, mlp, linear];
default for ensemble: lightgbm and mlp, equal). `linear` is L2-regularized logistic regression (ridge for
regression, strength 1/linear_C) on the standardized + one-hot matrix; `forest` and `svm` are scikit-learn
models on the same matrix, stored as ONNX (sklearn_members.py). `ordinal: {column: [values in
order]}` turns ordered categories into one numeric rank column (unknown values -> missing), which
LightGBM splits monotonically and the MLP / linear model see as one slope instead of one-hots. `coding:
{members: [linear], ordinal: {...}, indicators: {column: [values]}}` gives the members named their own,
compact coding (more ranks; indicators for a few values only): see luodi/data/coding.py.
`inner_folds: k` (k >= 2) cross-fits: k members, each trained on k-1 folds of the training rows and
early-stopped on the remaining fold; predictions average the members and the calibrator is fitted on the
out-of-fold predictions of every training row. Every training row is used and the validation split is
never touched during fit, so its score is an honest estimate (with k = 0, early stopping and calibration
use the validation split). Members are saved under run_dir/member<j>/.
Weights: LightGBM text format, MLP safetensors, forest / SVM ONNX, linear coefficients, preprocessing and
calibration as JSON. Training checkpoints every epoch (the MLP on the shared luodi.train.torch_loop; LightGBM: every
n_estimators/epochs rounds) under run_dir/checkpoint and resumes from there.

Modules, top down: task.py (TabularTask: data, fit, the weighted average, predictions, metrics), explaining.py
(TreeSHAP + ablation), rows.py (records -> every member's matrices, directly for single records or through
pandas), members.py (fitting each member), sklearn_members.py (forest / SVM as ONNX), store.py (files and HTTP
schemas), torch_state.py (safetensors of torch modules, the MLP), optimizing.py + onnx_graphs.py (`luodi optimize
--method onnx`: the whole ensemble as one ONNX graph run by onnxruntime). The options are
luodi.options.tabular.TabularOptions.
"""

from luodi.tasks.tabular.task import TabularTask

__all__ = ["TabularTask"]
