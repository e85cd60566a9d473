"""DICOM series reading: discovery, selection rules, geometry handling and errors on tiny series."""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from osteoscan.errors import GeometryError, InputError, UnsupportedSeriesError
from osteoscan.io.dicom import load_dicom_series, scan_series
from osteoscan.io.dicom_writer import write_dicom_series
from osteoscan.io.volume import CTVolume, Provenance, affine_from_spacing, to_canonical

from .conftest import MR_STORAGE, SC_STORAGE, SeriesSpec, axial_positions, hu_slices, write_series


def _expected(spec: SeriesSpec) -> np.ndarray:
    return np.stack(spec.pixels)


def test_shuffled_names_without_suffix_in_subfolders_sorted_by_position(
    tmp_path: Path, ct_spec: SeriesSpec
) -> None:
    n = len(ct_spec.pixels)
    order = list(range(n))
    random.Random(1).shuffle(order)
    # InstanceNumbers deliberately disagree with the positions: sorting must use positions
    ct_spec.instance_numbers = [n - k for k in range(n)]
    names = [f"IMG{order[k]:03d}" for k in range(n)]  # file names in shuffled order, no .dcm
    paths = write_series(tmp_path / "a", ct_spec, names)
    for p in paths[: n // 2]:  # half of them one level deeper
        (tmp_path / "a" / "deep").mkdir(exist_ok=True)
        p.rename(tmp_path / "a" / "deep" / p.name)
    series = load_dicom_series(tmp_path)
    vol = series.volume
    assert vol.orientation == ("S", "P", "L")
    assert vol.shape == (n, 32, 32)
    assert np.array_equal(vol.array, _expected(ct_spec))
    assert np.allclose(vol.spacing, (2.0, 0.8, 0.7))
    assert np.allclose(vol.origin, (-10.0, -20.0, 50.0))
    # datasets follow the volume's slice order
    z = [float(ds.ImagePositionPatient[2]) for ds in series.datasets]
    assert z == sorted(z) and series.slice_axis == 0 and not series.resampled
    assert vol.provenance.sop_instance_uids == tuple(ds.SOPInstanceUID for ds in series.datasets)


def test_provenance_is_filled(tmp_path: Path, ct_spec: SeriesSpec) -> None:
    ct_spec.extra = {"ContrastBolusAgent": "IOHEXOL", "StudyDate": "20240102"}
    write_series(tmp_path, ct_spec)
    p = load_dicom_series(tmp_path).volume.provenance
    assert p.source_format == "dicom" and p.modality == "CT"
    assert p.series_instance_uid == ct_spec.series_uid and p.study_instance_uid == ct_spec.study_uid
    assert p.kvp == 120.0 and p.convolution_kernel == "STANDARD" and p.slice_thickness_mm == 2.0
    assert p.patient_age_years == 63 and p.patient_sex == "F"
    assert p.patient_height_m == 1.65 and p.patient_weight_kg == 58.0
    assert p.contrast_agent == "IOHEXOL" and p.study_date == "20240102"
    assert p.manufacturer == "TESTVENDOR" and p.patient_id == "TEST-1"
    assert "Explicit VR Little Endian" in p.transfer_syntax and len(p.sop_instance_uids) == 12


def test_head_first_descending_stack_and_coronal_orientation_become_canonical(tmp_path: Path) -> None:
    # positions written top to bottom, rows running feet->head (a coronal stack)
    n = 11
    spec = SeriesSpec(
        pixels=hu_slices(n, rows=24, cols=20),
        positions=[[0.0, 30.0 - 3.0 * k, 0.0] for k in range(n)],  # slices along -y (anterior)
        iop=(1.0, 0.0, 0.0, 0.0, 0.0, -1.0),  # rows along +x, columns downwards (-z)
        pixel_spacing=(1.5, 1.0),
        thickness=3.0,
    )
    write_series(tmp_path, spec)
    vol = load_dicom_series(tmp_path).volume
    assert vol.orientation == ("S", "P", "L")
    assert np.allclose(vol.spacing, (1.5, 3.0, 1.0))
    # the native stack, oriented by hand, must equal what the reader produced
    stack = np.stack(spec.pixels)  # [slice, row, col]; slice k at y = 30 - 3k
    native = CTVolume(stack, np.array([[0, 0, 1.0, 0], [-3.0, 0, 0, 30.0], [0, -1.5, 0, 0], [0, 0, 0, 1]]))
    assert np.array_equal(vol.array, to_canonical(native).array)
    assert np.allclose(vol.affine, to_canonical(native).affine)


def test_series_selection_rules_and_reasons(tmp_path: Path) -> None:
    soft = SeriesSpec(
        pixels=hu_slices(12),
        positions=axial_positions(12, 1.0),
        thickness=1.0,
        kernel="B30f",
        description="soft 1mm",
        series_number=3,
    )
    bone = dataclasses.replace(
        soft, kernel="B70f", description="bone 1mm", series_number=4, series_uid=generate_uid()
    )
    thick = SeriesSpec(
        pixels=hu_slices(5, seed=2),
        positions=axial_positions(5, 5.0),
        thickness=5.0,
        kernel="B30f",
        description="soft 5mm",
        series_number=5,
    )
    thick12 = SeriesSpec(
        pixels=hu_slices(12, seed=2),
        positions=axial_positions(12, 3.0),
        thickness=3.0,
        kernel="B30f",
        description="soft 3mm",
        series_number=6,
    )
    thin = SeriesSpec(
        pixels=hu_slices(12, seed=3),
        positions=axial_positions(12, 0.3),
        thickness=0.3,
        kernel="B30f",
        description="too thin",
        series_number=7,
    )
    derived = dataclasses.replace(
        soft,
        image_type=("DERIVED", "SECONDARY", "AXIAL"),
        description="derived",
        series_number=8,
        series_uid=generate_uid(),
    )
    scout = SeriesSpec(
        pixels=hu_slices(1, 40, 32),
        positions=[[0, 0, 0]],
        iop=(1, 0, 0, 0, 0, -1),
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
        description="scout",
        series_number=1,
    )
    dose = SeriesSpec(
        pixels=hu_slices(1),
        positions=[[0, 0, 0]],
        sop_class=SC_STORAGE,
        image_type=("DERIVED", "SECONDARY", "OTHER"),
        description="dose report",
        series_number=999,
    )
    mr = SeriesSpec(
        pixels=hu_slices(12),
        positions=axial_positions(12),
        modality="MR",
        sop_class=MR_STORAGE,
        description="T1",
        series_number=10,
    )
    for i, s in enumerate([soft, bone, thick, thick12, thin, derived, scout, dose, mr]):
        write_series(tmp_path / f"s{i}", s)
    series = load_dicom_series(tmp_path)
    assert series.volume.provenance.series_instance_uid == soft.series_uid
    reasons = {s.description: s.reason for s in series.skipped}
    assert set(reasons) == {
        "bone 1mm",
        "soft 5mm",
        "soft 3mm",
        "too thin",
        "derived",
        "scout",
        "dose report",
        "T1",
    }
    assert "kernel" in reasons["bone 1mm"] and "B70f" in reasons["bone 1mm"]
    assert "slice" in reasons["soft 5mm"]  # only 5 slices: not a volume
    assert "thicker" in reasons["soft 3mm"]
    assert "thinner than 0.5" in reasons["too thin"]
    assert "DERIVED" in reasons["derived"]
    assert "localizer" in reasons["scout"]
    assert "secondary capture" in reasons["dose report"]
    assert reasons["T1"] == "MR series: osteoscan analyses CT only"
    # the caller can override the choice
    chosen = load_dicom_series(tmp_path, series_uid=bone.series_uid)
    assert chosen.volume.provenance.convolution_kernel == "B70f"
    with pytest.raises(InputError, match="not found. Available series"):
        load_dicom_series(tmp_path, series_uid="1.2.3.4")
    with pytest.raises(UnsupportedSeriesError, match="MR series: osteoscan analyses CT only"):
        load_dicom_series(tmp_path, series_uid=mr.series_uid)
    # headers-only scan agrees
    _, info, skipped, _ = scan_series(tmp_path)
    assert info is not None and info.series_uid == soft.series_uid and len(skipped) == 8


def test_mr_only_is_rejected_with_one_line_reason(tmp_path: Path) -> None:
    write_series(
        tmp_path,
        SeriesSpec(pixels=hu_slices(12), positions=axial_positions(12), modality="MR", sop_class=MR_STORAGE),
    )
    with pytest.raises(UnsupportedSeriesError) as err:
        load_dicom_series(tmp_path)
    msg = str(err.value)
    assert "MR series: osteoscan analyses CT only" in msg and "\n" not in msg and str(tmp_path) in msg


def test_localizer_and_mixed_sizes_inside_the_chosen_series(tmp_path: Path, ct_spec: SeriesSpec) -> None:
    write_series(tmp_path, ct_spec)
    # GE style: the scout shares the series UID, with another orientation and size
    scout = dataclasses.replace(
        ct_spec,
        pixels=hu_slices(1, 48, 32),
        positions=[[0, 0, 0]],
        iop=(1, 0, 0, 0, 0, -1),
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
        series_number=2,
    )
    write_series(tmp_path, scout, names=["scout.dcm"])
    odd = dataclasses.replace(
        ct_spec, pixels=hu_slices(2, 16, 16), positions=axial_positions(2, 2.0, (0, 0, 500))
    )
    write_series(tmp_path, odd, names=["odd1.dcm", "odd2.dcm"])
    series = load_dicom_series(tmp_path)
    assert series.volume.shape == (12, 32, 32)
    reasons = " | ".join(s.reason for s in series.skipped)
    assert "localizer" in reasons
    assert "16x16" in reasons and "mixed image sizes" in reasons


def _sheared_spec(n: int, tilt_deg: float) -> SeriesSpec:
    """Axial slices with a gantry tilt: origins move along y by step*tan(tilt) per slice.

    The object is a smooth bright rod fixed in patient space along z at y = 1 mm, so in the
    stored slices it moves across the rows.
    """
    step, ps = 2.0, 1.0
    shift = step * np.tan(np.radians(tilt_deg))
    pixels, positions = [], []
    for k in range(n):
        oy = -20.0 + k * shift
        y = np.arange(40) * ps + oy
        profile = 1000.0 * np.exp(-((y - 1.0) ** 2) / (2 * 1.5**2))
        pixels.append(np.repeat(np.rint(profile)[:, None], 40, axis=1).astype(np.int16))
        positions.append([-20.0, oy, k * step])
    return SeriesSpec(
        pixels=pixels, positions=positions, pixel_spacing=(ps, ps), thickness=step, intercept=0.0
    )


def test_gantry_tilt_is_corrected_onto_an_orthogonal_grid(tmp_path: Path) -> None:
    write_series(tmp_path, _sheared_spec(12, 15.0))
    series = load_dicom_series(tmp_path)
    vol = series.volume
    assert series.resampled
    assert any("gantry tilt 15.0 degrees" in n for n in vol.provenance.geometry_notes)
    assert np.allclose(vol.direction, np.eye(3)[:, [2, 1, 0]])  # orthogonal S, P, L axes
    assert np.isclose(vol.spacing[0], 2.0)
    # the rod (y = 1 mm, i.e. row 21 of the first slice's grid) is on the same row in every slice
    rows = np.arange(vol.shape[1])
    for k in range(vol.shape[0]):
        col = np.clip(vol.array[k, :, 20].astype(np.float64), 0, None)
        assert abs((col * rows).sum() / col.sum() - 21.0) < 0.1, k
    steep = tmp_path / "steep"
    write_series(steep, _sheared_spec(12, 40.0))
    with pytest.raises(GeometryError, match="gantry tilt of 40.0"):
        load_dicom_series(steep)


def test_missing_slice_is_interpolated_and_flagged(tmp_path: Path, ct_spec: SeriesSpec) -> None:
    paths = write_series(tmp_path, ct_spec)
    paths[5].unlink()
    series = load_dicom_series(tmp_path)
    vol = series.volume
    assert vol.shape[0] == 12 and series.resampled and np.isclose(vol.spacing[0], 2.0)
    assert any("non-uniform slice spacing" in n and "1 gap" in n for n in vol.provenance.geometry_notes)
    expected = _expected(ct_spec).astype(np.float32)
    assert np.allclose(vol.array[5], (expected[4] + expected[6]) / 2)
    assert np.array_equal(vol.array[[0, 4, 6, 11]], expected[[0, 4, 6, 11]])


def test_large_gap_is_rejected(tmp_path: Path, ct_spec: SeriesSpec) -> None:
    paths = write_series(tmp_path, ct_spec)
    for p in paths[3:9]:
        p.unlink()  # 14 mm gap with a 2 mm step
    with pytest.raises(GeometryError, match="slices are missing"):
        load_dicom_series(tmp_path)


def test_duplicates_are_dropped(tmp_path: Path, ct_spec: SeriesSpec) -> None:
    paths = write_series(tmp_path, ct_spec)
    shutil.copy(paths[3], tmp_path / "copy_of_3.dcm")  # the same SOP instance twice
    dup = dataclasses.replace(
        ct_spec, pixels=[ct_spec.pixels[7] + 5], positions=[ct_spec.positions[7]], instance_numbers=[99]
    )
    write_series(tmp_path, dup, names=["dup7.dcm"])  # another image at an occupied position
    series = load_dicom_series(tmp_path)
    assert series.volume.shape[0] == 12
    assert np.array_equal(series.volume.array, _expected(ct_spec))  # lowest InstanceNumber kept
    assert any("already occupied slice position" in n for n in series.volume.provenance.geometry_notes)


def test_single_slice_is_a_valid_input(tmp_path: Path) -> None:
    spec = SeriesSpec(pixels=hu_slices(1), positions=[[0, 0, 0]], thickness=5.0)
    (path,) = write_series(tmp_path, spec)
    for source in (tmp_path, path, [path]):
        vol = load_dicom_series(source).volume
        assert vol.shape == (1, 32, 32) and np.isclose(vol.spacing[0], 5.0)
        assert np.array_equal(vol.array[0], spec.pixels[0])


def test_rescale_slope_and_intercept_are_applied(tmp_path: Path) -> None:
    px = [np.array([[-1000, 0], [40, 1500]], np.int16) + 2 * k for k in range(3)]
    spec = SeriesSpec(pixels=px, positions=axial_positions(3), slope=2.0, intercept=-2048.0)
    write_series(tmp_path, spec)
    vol = load_dicom_series(tmp_path).volume
    assert vol.array.dtype == np.int16 and np.array_equal(vol.array, np.stack(px))
    spec2 = SeriesSpec(pixels=px, positions=axial_positions(3), slope=0.5, intercept=-1024.5)
    write_series(tmp_path / "frac", spec2)
    vol2 = load_dicom_series(tmp_path / "frac").volume
    assert vol2.array.dtype == np.float32 and np.allclose(vol2.array, np.stack(px), atol=0.5)


def test_junk_is_skipped_with_a_warning(
    tmp_path: Path, ct_spec: SeriesSpec, caplog: pytest.LogCaptureFixture
) -> None:
    write_series(tmp_path, ct_spec)
    (tmp_path / "README.txt").write_text("not a dicom file\n" * 20)
    (tmp_path / "thumbs.db").write_bytes(os.urandom(300))
    with caplog.at_level(logging.WARNING, logger="osteoscan.io.dicom"):
        series = load_dicom_series(tmp_path)
    assert series.volume.shape[0] == 12
    assert {Path(p).name for p, _ in series.ignored_files} == {"README.txt", "thumbs.db"}
    assert "README.txt" in caplog.text


def test_input_errors_name_the_path_and_the_fix(tmp_path: Path, ct_spec: SeriesSpec) -> None:
    with pytest.raises(InputError, match="no such file or folder"):
        load_dicom_series(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="empty"):
        load_dicom_series(empty)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.txt").write_text("hello")
    with pytest.raises(InputError, match="no DICOM images found"):
        load_dicom_series(junk)
    series_dir = tmp_path / "trunc"
    paths = write_series(series_dir, ct_spec)
    data = paths[4].read_bytes()
    paths[4].write_bytes(data[: len(data) - 700])  # pixel data cut short
    with pytest.raises(InputError, match=paths[4].name + ".*truncated or corrupt"):
        load_dicom_series(series_dir)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores file permissions")
def test_permission_error_names_the_file(tmp_path: Path, ct_spec: SeriesSpec) -> None:
    paths = write_series(tmp_path, ct_spec)
    paths[2].chmod(0)
    try:
        with pytest.raises(InputError, match="permission denied"):
            load_dicom_series(tmp_path)
    finally:
        paths[2].chmod(0o644)


def test_zip_and_file_list_inputs(tmp_path: Path, ct_spec: SeriesSpec) -> None:
    paths = write_series(tmp_path / "series", ct_spec)
    zpath = tmp_path / "export.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in paths:
            zf.write(p, f"DICOM/ST1/{p.stem}")  # no suffix inside the zip
        zf.writestr("DICOM/notes.txt", "junk")
    from_zip = load_dicom_series(zpath).volume
    assert np.array_equal(from_zip.array, _expected(ct_spec))
    assert from_zip.provenance.source_path == str(zpath)
    shuffled = list(reversed(paths))
    assert np.array_equal(load_dicom_series(shuffled).volume.array, _expected(ct_spec))
    bad_zip = tmp_path / "bad.zip"
    bad_zip.write_bytes(zpath.read_bytes()[:200])
    with pytest.raises(InputError):
        load_dicom_series(bad_zip)


def test_writer_round_trip_any_orientation(tmp_path: Path) -> None:
    arr = np.random.default_rng(5).integers(-1024, 2000, size=(6, 36, 40)).astype(np.int16)
    # an I, A, R volume (head-to-feet, anterior-to-posterior flipped, right-to-left flipped)
    aff = np.array([[0, 0, -0.7, 100.0], [0, -0.8, 0, 50.0], [-2.5, 0, 0, 300.0], [0, 0, 0, 1]])
    vol = CTVolume(arr, aff, Provenance(kvp=80.0, convolution_kernel="FC08", patient_sex="M"))
    write_dicom_series(vol, tmp_path / "dcm", compression="jpegls", patient_age_years=44)
    back = load_dicom_series(tmp_path / "dcm")
    canon = to_canonical(vol)
    assert np.array_equal(back.volume.array, canon.array)
    assert np.allclose(back.volume.affine, canon.affine, atol=1e-4)
    p = back.volume.provenance
    assert (
        p.kvp == 80.0
        and p.convolution_kernel == "FC08"
        and p.patient_age_years == 44
        and p.patient_sex == "M"
    )
    assert "JPEG-LS Lossless" in p.transfer_syntax


def _enhanced_ct(path: Path, frames: np.ndarray, step: float) -> None:
    """A minimal Enhanced CT Image Storage file (multi-frame with functional groups)."""
    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.2.1")
    meta.MediaStorageSOPInstanceUID = UID(generate_uid())
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SeriesNumber = 1
    ds.NumberOfFrames = len(frames)
    ds.Rows, ds.Columns = frames.shape[1:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = Dataset()
    meas, ori, xf = Dataset(), Dataset(), Dataset()
    meas.PixelSpacing, meas.SliceThickness = [0.5, 0.6], step
    ori.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    xf.RescaleSlope, xf.RescaleIntercept, xf.RescaleType = 1, -1024, "HU"
    shared.PixelMeasuresSequence = [meas]
    shared.PlaneOrientationSequence = [ori]
    shared.PixelValueTransformationSequence = [xf]
    ds.SharedFunctionalGroupsSequence = [shared]
    per = []
    order = [2, 0, 3, 1]  # frames stored out of position order
    for f in order:
        item, pos = Dataset(), Dataset()
        pos.ImagePositionPatient = [0.0, 0.0, f * step]
        item.PlanePositionSequence = [pos]
        per.append(item)
    ds.PerFrameFunctionalGroupsSequence = per
    ds.PixelData = (frames[order].astype(np.int32) + 1024).astype(np.int16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_enhanced_ct_multiframe(tmp_path: Path) -> None:
    frames = np.stack(hu_slices(4, 34, 36))
    _enhanced_ct(tmp_path / "enhanced.dcm", frames, 1.5)
    series = load_dicom_series(tmp_path)
    assert np.array_equal(series.volume.array, frames)
    assert np.allclose(series.volume.spacing, (1.5, 0.5, 0.6))
    assert len(series.datasets) == 4


def test_datasets_are_header_only(tmp_path: Path, ct_spec: SeriesSpec) -> None:
    write_series(tmp_path, ct_spec)
    series = load_dicom_series(tmp_path)
    assert all("PixelData" not in ds for ds in series.datasets)
    assert isinstance(series.datasets[0], pydicom.Dataset)
    assert series.datasets[0].SeriesInstanceUID == ct_spec.series_uid


def test_affine_from_spacing_volume_round_trip(tmp_path: Path) -> None:
    vol = CTVolume(np.stack(hu_slices(3, 33, 35)), affine_from_spacing((3.0, 0.9, 0.9), (1.0, 2.0, 3.0)))
    write_dicom_series(vol, tmp_path)
    back = load_dicom_series(tmp_path).volume
    assert np.array_equal(back.array, vol.array) and np.allclose(back.affine, vol.affine)


def test_permission_error_message_when_running_as_root(
    tmp_path: Path, ct_spec: SeriesSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Root ignores file modes, so raise the OS error the way an unreadable file does."""
    paths = write_series(tmp_path, ct_spec)
    real = pydicom.dcmread

    def dcmread(fp, *args, **kwargs):
        if Path(fp) == paths[2]:
            raise PermissionError(13, "Permission denied", str(fp))
        return real(fp, *args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", dcmread)
    with pytest.raises(InputError, match=f"{paths[2].name}: permission denied.*chmod"):
        load_dicom_series(tmp_path)


def test_folder_with_dicomdir(tmp_path: Path, ct_spec: SeriesSpec) -> None:
    """A media folder (DICOMDIR + renamed files) reads like any folder; the DICOMDIR is not an image."""
    from pydicom.fileset import FileSet

    ct_spec.extra = {"StudyDate": "20240101", "StudyTime": "120000", "StudyID": "1", "AccessionNumber": ""}
    src = write_series(tmp_path / "src", ct_spec)
    fs = FileSet()
    for p in src:
        fs.add(pydicom.dcmread(p))
    fs.write(tmp_path / "media")
    assert (tmp_path / "media" / "DICOMDIR").is_file()
    series = load_dicom_series(tmp_path / "media")
    assert np.array_equal(series.volume.array, _expected(ct_spec))
    assert [Path(p).name for p, _ in series.ignored_files] == ["DICOMDIR"]


def test_datasets_follow_canonical_order_when_the_normal_points_down(tmp_path: Path) -> None:
    # columns run anterior (-y), so the slice normal row x col points to the feet (-z)
    n = 10
    spec = SeriesSpec(pixels=hu_slices(n, 20, 22), positions=axial_positions(n, 2.5), iop=(1, 0, 0, 0, -1, 0))
    write_series(tmp_path, spec)
    series = load_dicom_series(tmp_path)
    vol = series.volume
    assert vol.orientation == ("S", "P", "L") and series.slice_axis == 0
    z = [float(ds.ImagePositionPatient[2]) for ds in series.datasets]
    assert z == sorted(z)
    for k in range(n):  # slice k of the volume is the image of datasets[k] (rows flipped to P)
        assert np.array_equal(vol.array[k], spec.pixels[k][::-1])
    assert vol.provenance.sop_instance_uids == tuple(ds.SOPInstanceUID for ds in series.datasets)


def test_two_phases_in_one_series_are_split_by_acquisition(tmp_path: Path, ct_spec: SeriesSpec) -> None:
    pre = dataclasses.replace(ct_spec, extra={"AcquisitionNumber": 1})
    write_series(tmp_path, pre, names=[f"pre{k}" for k in range(12)])
    post_pixels = [p + 200 for p in ct_spec.pixels[:8]]
    post = dataclasses.replace(
        ct_spec,
        pixels=post_pixels,
        positions=ct_spec.positions[2:10],
        instance_numbers=list(range(13, 21)),
        extra={"AcquisitionNumber": 2},
    )
    write_series(tmp_path, post, names=[f"post{k}" for k in range(8)])
    series = load_dicom_series(tmp_path)
    assert np.array_equal(series.volume.array, _expected(ct_spec))  # one phase, not interleaved
    assert not series.volume.provenance.geometry_notes
    (skipped,) = series.skipped
    assert "acquisition 2" in skipped.reason and "8 images" in skipped.reason


def test_parallel_decoding_matches_serial(tmp_path: Path) -> None:
    """Enough compressed slices to use worker processes; the result equals in-process decoding."""
    from osteoscan.io.dicom import MIN_FRAMES_FOR_PROCESSES

    n = MIN_FRAMES_FOR_PROCESSES
    vol = CTVolume(np.stack(hu_slices(n, 32, 32)), affine_from_spacing((1.0, 0.5, 0.5)))
    write_dicom_series(vol, tmp_path, compression="rle")
    parallel = load_dicom_series(tmp_path, workers=2).volume
    serial = load_dicom_series(tmp_path, workers=1).volume
    assert np.array_equal(parallel.array, vol.array) and np.array_equal(serial.array, vol.array)
