"""Evaluation (stage 6) as a library: image-quality metrics of every generator output and its classical
baselines, with statistics and figures.

Modules: `tasks` (the outputs the model families export, grouped into tasks; those not evaluated, with
their reasons), `cases` (one subject's images, SR geometry, baselines), `metrics`, `statistics`, `figures`
(drawn here: the report only assembles them) and `run` (the whole evaluation: CSVs, summary.json, figures).
The stage is `pipeline.stages.evaluate`.

Protocol (written into `results/metrics/summary.json` and shown in the report):

- Images: the preprocessed, normalised ground truth (intensities in [0, 1], so the data range is 1.0) and,
  on the same grid, each generator output and each baseline. Outputs and baselines are clipped to
  [0, data_range] before scoring (zero-filled k-space rings below 0; a generator may overshoot).
- Region: the subject's foreground mask from preprocessing. Every metric is taken over mask voxels only.
- PSNR: 10 log10(data_range^2 / MSE), MSE over mask voxels (`skimage.metrics.peak_signal_noise_ratio`).
- SSIM: the local SSIM map of the whole 3D volume (`skimage.metrics.structural_similarity`, full=True;
  Gaussian window sigma 1.5 truncated to 11^3 voxels as in Wang et al. 2004, K1 0.01, K2 0.03, population
  covariance, reflected borders), averaged over mask voxels. MONAI's `SSIMMetric` agrees (unit test).
- MAE: mean |output - truth| over mask voxels (`monai.metrics.MAEMetric`).
- NRMSE: ||output - truth||_2 / ||truth||_2 over mask voxels (`skimage.metrics.normalized_root_mse`,
  Euclidean normalisation).
- Baselines. Super-resolution: `pipeline.imaging.degrade.upsample` of the LR input with bicubic (cubic spline along
  the degraded axes: 2D in-plane for in-plane degradation), trilinear, and, when the LR came from k-space
  truncation, zero-filled k-space (sinc) interpolation. Translation: the source image itself (identity), its
  histogram matched to the subject's own target inside the mask (an oracle increasing intensity map, so a
  deliberately strong baseline), and the same for the inverted source (the oracle decreasing map: T1w -> T2w
  inverts most tissue contrasts, and this map alone beats the increasing one by 6-9 dB there). The strongest
  baseline of a task is the one with the highest mean PSNR.
- Statistics per task and method: n, mean, SD (ddof 1), percentile-bootstrap CI of the mean (seeded);
  model - baseline paired differences per subject with their bootstrap CI and a two-sided Wilcoxon
  signed-rank p-value (`scipy.stats.wilcoxon`); with fewer than 2 subjects CIs and p-values are null.
  Verdict per metric: `worse` whenever the CI of the difference lies entirely on the bad side of 0 (below
  0 for PSNR/SSIM, above for MAE/NRMSE), whatever p (with fewer than 6 subjects the exact two-sided test
  cannot reach p < 0.05, and a model that loses on every subject must still be called worse; the comparison's
  `note` says so); `better` only when the CI lies entirely on the good side and p < 1 - confidence; else
  `inconclusive` (`n/a` without a CI).
"""
