"""The demo cohort's subjects, simulated from a real brain template (no files written here).

Anatomy: the ICBM 2009a nonlinear symmetric MNI152 template's grey- and white-matter probability maps as packaged
in the nilearn wheel (read from the installed files; nothing is downloaded); CSF is the template's brain mask minus
GM and WM. Every subject gets its own random affine (a few degrees of rotation, +-5 % scaling, a few mm
shift), a smooth random deformation, tissue-parameter jitter, a multiplicative bias field and Rician noise.

Signal: a spin-echo, S = PD * (1 - exp(-TR/T1)) * exp(-TE/T2), summed over the tissue fractions of each voxel,
with the 1.5 T tissue parameters of the BrainWeb simulator (Kwan, Evans & Pike, "MRI simulation-based evaluation
of image-processing and classification methods", IEEE Trans Med Imaging 18(11):1085-1097, 1999; Cocosco et al.,
NeuroImage 5:S425, 1997): T1/T2 (ms)/PD = CSF 2569/329/1.0, GM 833/83/0.86, WM 500/70/0.77. Sequences:
T1w TR 500 / TE 15 ms (short/short), T2w TR 4000 / TE 100 ms (long/long), PDw TR 4000 / TE 15 ms (long/short),
which give WM > GM > CSF on T1w, CSF > GM > WM on T2w and CSF >= GM > WM on PDw.

Deterministic: subject `i` draws everything from `numpy.random.default_rng([seed, i])`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from pathlib import Path

import numpy as np

from pipeline.config import DemoConfig

MODALITIES = ("T1w", "T2w", "PDw")
TISSUES = ("CSF", "GM", "WM")
# (T1 ms, T2 ms, PD relative) at 1.5 T, BrainWeb (Kwan et al. 1999); see the module docstring.
TISSUE_PARAMS: dict[str, tuple[float, float, float]] = {
    "CSF": (2569.0, 329.0, 1.00),
    "GM": (833.0, 83.0, 0.86),
    "WM": (500.0, 70.0, 0.77),
}
# Spin-echo (TR ms, TE ms) per contrast.
SEQUENCES: dict[str, tuple[float, float]] = {
    "T1w": (500.0, 15.0),
    "T2w": (4000.0, 100.0),
    "PDw": (4000.0, 15.0),
}
FIELD_STRENGTH_T = 1.5
TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
MARGIN_MM = 10.0  # field of view beyond the template brain's bounding box, room for pose and size changes

# DICOM subjects cycle through these acquisitions. `axcodes`: where each array axis points (nibabel letters):
# axis 0 runs along the image rows, axis 1 down the columns, axis 2 through the slices.
# `tilt`: rotation of the whole slice stack about the brain centre (degrees about x, y, z); non-zero = oblique.
# `prefix`: of the study folder's name; `layout`: how series folders and files are named
# (`pipeline.demo.write._series_layout`).
DICOM_PROTOCOLS: tuple[dict, ...] = (
    {"tilt": (0.0, 0.0, 0.0), "position": "HFS", "layout": "study_series", "prefix": "ST",
     "series": {"T1w": ("T1 MPRAGE SAG", "PIR"), "T2w": ("t2_tse_tra", "LPS"), "PDw": ("PD AX", "LPS")}},
    {"tilt": (12.0, 0.0, 3.0), "position": "HFS", "layout": "flat_mixed", "prefix": "EXPORT",
     "series": {"T1w": ("t1_se_tra", "LPI"), "T2w": ("AX T2 FSE", "LPS"), "PDw": ("PDW_COR", "LIP")}},
    {"tilt": (0.0, 0.0, 0.0), "position": "FFS", "layout": "philips", "prefix": "X",
     "series": {"T1w": ("T1W_SE SAG", "PIL"), "T2w": ("T2W_TSE COR", "LIP"), "PDw": ("Proton Density AX", "LPS")}},
    {"tilt": (-6.0, 8.0, 0.0), "position": "HFS", "layout": "uid_named", "prefix": "Q",
     "series": {"T1w": ("T1 MPRAGE SAG", "PIR"), "T2w": ("t2_tse_cor", "LIA"), "PDw": ("PD AXIAL", "LPI")}},
)


# --------------------------------------------------------------------------------------------- template
@dataclasses.dataclass(frozen=True)
class Template:
    """Tissue fraction maps (CSF, GM, WM) on the template's 1-mm grid, cropped to the brain and pre-blurred."""

    fractions: np.ndarray  # (3, X, Y, Z) float32
    affine: np.ndarray  # voxel -> MNI mm of the cropped maps
    box_min: np.ndarray  # world bounding box of the brain (mm)
    box_max: np.ndarray

    @property
    def centre(self) -> np.ndarray:
        return (self.box_min + self.box_max) / 2


def template_dir() -> Path:
    """nilearn's packaged data folder, found without importing nilearn (which is slow to import)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the demo needs the nilearn package (it ships the MNI152 template); pip install nilearn")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


@functools.lru_cache(maxsize=4)
def load_template(voxel_mm: float) -> Template:
    """Read the packaged template and turn it into tissue fractions, blurred to about `voxel_mm` resolution."""
    import nibabel as nib
    from scipy.ndimage import gaussian_filter

    folder = template_dir()
    images = {}
    for key, name in TEMPLATE_FILES.items():
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: MNI152 template file missing from the nilearn installation")
        images[key] = nib.load(str(path))
    affine = images["t1"].affine
    for key, img in images.items():
        if img.shape != images["t1"].shape or not np.allclose(img.affine, affine):
            raise RuntimeError(f"{folder / TEMPLATE_FILES[key]}: grid differs from the T1 template's")
    t1 = np.asarray(images["t1"].dataobj)
    gm = np.asarray(images["gm"].dataobj, dtype=np.float32) / 255.0
    wm = np.asarray(images["wm"].dataobj, dtype=np.float32) / 255.0
    brain = ((t1 > 0) | (gm + wm > 0.5)).astype(np.float32)
    csf = np.clip(brain - gm - wm, 0.0, 1.0)

    nonzero = np.argwhere(brain > 0)
    lo = np.maximum(nonzero.min(axis=0) - 3, 0)
    hi = np.minimum(nonzero.max(axis=0) + 4, brain.shape)
    crop = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    fractions = np.stack([csf[crop], gm[crop], wm[crop]])
    # Partial volume at the target resolution: a Gaussian of FWHM ~ voxel size on top of the 1-mm maps.
    sigma_mm = np.sqrt(max(voxel_mm**2 - 1.0, 0.0)) / 2.355
    if sigma_mm > 0:
        for f in fractions:
            gaussian_filter(f, sigma_mm / np.abs(np.diag(affine)[:3]), output=f, mode="constant")
    crop_affine = affine.copy()
    crop_affine[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    box = affine[:3, :3] @ np.stack([nonzero.min(axis=0), nonzero.max(axis=0)]).T + affine[:3, 3:]
    return Template(fractions, crop_affine, box.min(axis=1), box.max(axis=1))


def reference_grid(template: Template, voxel_mm: float) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The axis-aligned RAS grid shared by all non-oblique subjects: the brain's box plus a margin."""
    extent = template.box_max - template.box_min + 2 * MARGIN_MM
    shape = tuple(int(np.ceil(e / voxel_mm)) for e in extent)
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = template.centre - (np.array(shape) - 1) / 2 * voxel_mm
    return affine, shape


def _rotation(degrees: tuple[float, float, float] | np.ndarray) -> np.ndarray:
    """Rotation matrix from angles (degrees) about the x, y and z axes, applied in that order."""
    ax, ay, az = np.deg2rad(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def tilted_grid(affine: np.ndarray, degrees: tuple[float, float, float], centre: np.ndarray) -> np.ndarray:
    """`affine` rotated about `centre` (world mm): an oblique slice stack over the same field of view."""
    rot = np.eye(4)
    rot[:3, :3] = _rotation(degrees)
    rot[:3, 3] = centre - rot[:3, :3] @ centre
    return rot @ affine


# --------------------------------------------------------------------------------------------- physics
def spin_echo(pd: float, t1: float, t2: float, tr: float, te: float) -> float:
    """Spin-echo signal S = PD (1 - exp(-TR/T1)) exp(-TE/T2) (times in ms)."""
    return pd * (1.0 - np.exp(-tr / t1)) * np.exp(-te / t2)


@dataclasses.dataclass
class DemoSubject:
    """One simulated subject: images (int16, x/y/z on `affine`) and the tissue fractions they came from."""

    index: int
    label: str
    sex: str
    age: int
    affine: np.ndarray
    images: dict[str, np.ndarray]
    fractions: np.ndarray  # (3, x, y, z) float32: CSF, GM, WM on the image grid
    sequences: dict[str, tuple[float, float]]  # modality -> (TR ms, TE ms) actually used


def subject_label(index: int) -> str:
    return f"demo{index + 1:02d}"


def _smooth_field(rng: np.random.Generator, n_terms: int, wavelength: tuple[float, float],
                  amplitude: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random plane waves (wave vectors (n, 3) in rad/mm, amplitudes, phases) of one smooth scalar field."""
    direction = rng.normal(size=(n_terms, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    k = direction * (2 * np.pi / rng.uniform(*wavelength, size=(n_terms, 1)))
    return k, rng.uniform(*amplitude, size=n_terms), rng.uniform(0, 2 * np.pi, size=n_terms)


def _eval_waves(waves: tuple[np.ndarray, np.ndarray, np.ndarray], world: np.ndarray) -> np.ndarray:
    k, amp, phase = (np.asarray(a, dtype=world.dtype) for a in waves)
    return amp @ np.sin(k @ world + phase[:, None])


def _quadratic_terms(u: np.ndarray) -> np.ndarray:
    x, y, z = u
    return np.stack([x, y, z, x * x, y * y, z * z, x * y, y * z, x * z])


def simulate_subject(cfg: DemoConfig, index: int, grid: tuple[np.ndarray, tuple[int, int, int]] | None = None
                     ) -> DemoSubject:
    """Simulate subject `index` of the cohort on `grid` (affine, shape); default: its `subject_grid`."""
    from scipy.ndimage import map_coordinates

    template = load_template(cfg.voxel_mm)
    affine, shape = grid if grid is not None else subject_grid(cfg, index)
    rng = np.random.default_rng([cfg.seed, index])
    sex = str(rng.choice(["F", "M"]))
    age = int(rng.integers(22, 80))
    # Pose and head size: template point = c + (R S)^-1 (x - c - t) + d(x), for x in the scanner's world.
    pose = _rotation(np.clip(rng.normal(0.0, 2.0, 3), -5, 5)) @ np.diag(rng.uniform(0.95, 1.05, 3))
    shift = rng.uniform(-4.0, 4.0, 3)
    warps = [_smooth_field(rng, 4, (70.0, 150.0), (0.5, 1.5)) for _ in range(3)]
    bias_coef = np.concatenate([rng.normal(0, 0.08, 3), rng.normal(0, 0.05, 6)])
    jitter = {t: np.clip(rng.normal(1.0, 0.04, 3), 0.9, 1.1) for t in TISSUES}

    # float32 coordinates (1e-5 mm precision) make the trigonometry several times faster than float64.
    f32 = np.float32
    world = affine[:3, :3].astype(f32) @ np.indices(shape, dtype=f32).reshape(3, -1) + affine[:3, 3:].astype(f32)
    centre = template.centre[:, None].astype(f32)
    mni = centre + np.linalg.inv(pose).astype(f32) @ (world - centre - shift[:, None].astype(f32))
    mni += np.stack([_eval_waves(w, world) for w in warps])
    inv = np.linalg.inv(template.affine).astype(f32)
    vox = inv[:3, :3] @ mni + inv[:3, 3:]
    del mni
    fractions = np.stack([
        map_coordinates(f, vox, order=1, mode="constant", cval=0.0, prefilter=False).reshape(shape)
        for f in template.fractions
    ])
    del vox
    bias = np.exp(bias_coef.astype(f32) @ _quadratic_terms((world - centre) / f32(80.0))).reshape(shape)
    del world

    images, sequences = {}, {}
    for modality in MODALITIES:
        tr, te = (round(float(v * f), 1) for v, f in zip(SEQUENCES[modality], rng.uniform(0.95, 1.05, 2),
                                                          strict=True))
        signal = np.array([spin_echo(p[2] * j[2], p[0] * j[0], p[1] * j[1], tr, te)
                           for p, j in ((TISSUE_PARAMS[t], jitter[t]) for t in TISSUES)], dtype=np.float32)
        gain = rng.uniform(800.0, 2000.0) / signal.max()  # the brightest tissue at 800-2000 units
        sigma = gain * signal.max() / rng.uniform(18.0, 35.0)  # SNR of the brightest tissue
        clean = np.tensordot(signal * gain, fractions, axes=1) * bias
        # the noise is drawn either way, so that a noise-free cohort's other draws match the noisy one's
        noise_re, noise_im = (rng.standard_normal(shape, dtype=f32) for _ in range(2))
        if not cfg.noise:
            sigma = 0.0
        real = clean + f32(sigma) * noise_re
        imag = f32(sigma) * noise_im
        del noise_re, noise_im
        magnitude = np.sqrt(real * real + imag * imag)  # Rician: the magnitude of complex Gaussian noise
        images[modality] = np.clip(np.round(magnitude), 0, 32767).astype(np.int16)
        sequences[modality] = (tr, te)
    return DemoSubject(index, subject_label(index), sex, age, affine, images, fractions, sequences)


def subject_grid(cfg: DemoConfig, index: int) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The grid subject `index` is simulated on: the reference grid, tilted for oblique DICOM protocols."""
    template = load_template(cfg.voxel_mm)
    affine, shape = reference_grid(template, cfg.voxel_mm)
    if index < cfg.n_dicom:
        tilt = DICOM_PROTOCOLS[index % len(DICOM_PROTOCOLS)]["tilt"]
        if any(tilt):
            affine = tilted_grid(affine, tilt, template.centre)
    return affine, shape
