"""Predictors of a candidate's metrics (accuracy, latency, size) from its architecture and quantization policy.

``features`` turns an (architecture, policy) candidate into a documented feature vector; ``families``
registers the scikit-learn model families a predictor may use; ``estimator.MetricPredictor`` picks
the best family by cross-validation and is itself a scikit-learn regressor; ``quality`` scores
predictions (MAPE, RMSE, Kendall tau, Spearman), which is reported every time a predictor is fitted.
"""
