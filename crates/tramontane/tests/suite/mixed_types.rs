//! A matrix stacked from parts of different storage types (q/k/v of a Q4_K_M
//! file: attn_v in q6_K) keeps each part in its own type, in its own slab and
//! kernel specialization, instead of falling back to f32. Checked by storing
//! llama_tiny's k_proj as f16 (q and v stay f32) and comparing with the same
//! f16-rounded values stored as f32 (one uniform f32 matrix): the same numbers
//! through both layouts must give the same logits.

use crate::common::*;
use half::f16;
use std::path::{Path, PathBuf};
use tramontane::parse::DType;
use tramontane::source::DirSource;
use tramontane::{LoadOptions, Model};

/// Copy llama_tiny to `dir`, rewriting every k_proj weight: as f16, or as the
/// f16-rounded values in f32.
fn rewrite(dir: &Path, as_f16: bool) {
    let src = fixtures().join("llama_tiny");
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("dir");
    for entry in std::fs::read_dir(&src).expect("fixture") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name").to_owned();
        if path.extension().is_none_or(|e| e != "safetensors") {
            std::fs::copy(&path, dir.join(name)).expect("copy");
            continue;
        }
        let bytes = std::fs::read(&path).expect("read");
        let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
        let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + n]).expect("header");
        let data = &bytes[8 + n..];
        let (mut out_header, mut out_data) = (serde_json::Map::new(), Vec::new());
        for (k, v) in header {
            if k == "__metadata__" {
                out_header.insert(k, v);
                continue;
            }
            let off = &v["data_offsets"];
            let (a, b) = (off[0].as_u64().expect("a") as usize, off[1].as_u64().expect("b") as usize);
            assert_eq!(v["dtype"], "F32", "llama_tiny is stored in f32");
            let mut raw = data[a..b].to_vec();
            let mut dtype = "F32";
            if k.ends_with("k_proj.weight") {
                let vals: Vec<f16> = raw.chunks_exact(4).map(|c| f16::from_f32(f32::from_le_bytes(c.try_into().expect("4")))).collect();
                raw = if as_f16 {
                    dtype = "F16";
                    vals.iter().flat_map(|h| h.to_le_bytes()).collect()
                } else {
                    vals.iter().flat_map(|h| h.to_f32().to_le_bytes()).collect()
                };
            }
            let start = out_data.len();
            out_data.extend_from_slice(&raw);
            out_header.insert(k, serde_json::json!({"dtype": dtype, "shape": v["shape"], "data_offsets": [start, out_data.len()]}));
        }
        let mut h = serde_json::to_vec(&out_header).expect("json");
        h.resize(h.len().next_multiple_of(8), b' ');
        let mut file = (h.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(&h);
        file.extend_from_slice(&out_data);
        std::fs::write(dir.join(name), file).expect("write");
    }
}

fn load_dir(dir: &Path) -> Model {
    pollster::block_on(Model::load(gpu(), &DirSource::new(dir), &LoadOptions::default(), &mut |_| {})).expect("load")
}

#[test]
fn q_k_v_of_different_types_keep_their_types() {
    let base: PathBuf = std::env::temp_dir().join(format!("tramontane-mixed-{}", std::process::id()));
    let (mixed_dir, uniform_dir) = (base.join("mixed"), base.join("uniform"));
    rewrite(&mixed_dir, true);
    rewrite(&uniform_dir, false);
    let mut mixed = load_dir(&mixed_dir);
    let mut uniform = load_dir(&uniform_dir);
    let qkv = &mixed.runtime.weights.layers[0].qkv;
    let types: Vec<DType> = qkv.slabs.iter().map(|s| s.dtype).collect();
    assert_eq!(types, [DType::F32, DType::F16, DType::F32], "q, k, v each in their own type");
    assert_eq!(mixed.info.split_matrices, 0, "type slabs are not binding-limit splits");
    assert_eq!(uniform.runtime.weights.layers[0].qkv.slabs.len(), 1);
    assert!(mixed.info.weight_bytes < uniform.info.weight_bytes, "k is stored in half the bytes");
    let vocab = mixed.config().vocab;
    let r = reference("llama_tiny");
    for p in r["prompts"].as_array().expect("prompts") {
        let input = ids(&p["input_ids"]);
        let a = pollster::block_on(mixed.logits_all(&input)).expect("mixed");
        let b = pollster::block_on(uniform.logits_all(&input)).expect("uniform");
        assert_eq!(a.len(), b.len());
        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        eprintln!("{}: mixed and uniform layouts differ by {worst:.2e}", p["name"]);
        // Measured exactly 0 on lavapipe (2026-12-01): the same values through
        // the same arithmetic. Two kernel specializations may still be compiled
        // to different instruction orders on another driver or CPU, so allow
        // f32 rounding, far below any layout mistake.
        assert!(worst <= 1e-5, "mixed and uniform layouts differ by {worst}");
        for pos in 0..input.len() {
            assert_eq!(argmax(&a[pos * vocab..(pos + 1) * vocab]), argmax(&b[pos * vocab..(pos + 1) * vocab]));
        }
    }
    let _ = std::fs::remove_dir_all(&base);
}
