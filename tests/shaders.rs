//! Every shader, in every variant the engine compiles, parsed and validated by naga and
//! translated to SPIR-V, MSL, HLSL and GLSL: a backend we cannot run here still compiles.
//! Also checks that each shader's `Params` struct and storage bindings match their Rust
//! declarations. Needs no GPU.

use gemma_wgpu::gpu::Access;
use gemma_wgpu::kernels::source::{self, Shader, WeightsSource};
use gemma_wgpu::weights::WeightFormat;
use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};

/// (variant name, source) for every combination of reduction helpers, reading and shared
/// helpers a device can compose: each weight format row after row, in row tiles where its
/// narrow reading tiles (named `.tiled`), and its wide twin where it has one (always tiled,
/// named `.wide`); the narrow readings also beside the wide twin of the shader's shared
/// helpers where it has one (as on CPU adapters with SHADER_INT64, named `.xwide`), and for
/// the shaders without weights the wide twin of their shared helpers (named `.wide`).
fn variants(shader: &Shader) -> Vec<(String, String)> {
    let shared_wide = !shader.shared_wide.is_empty();
    let readings: Vec<(Option<WeightsSource>, bool)> = if shader.weights {
        let mut readings = vec![];
        for format in WeightFormat::ALL {
            let unit = format.unit();
            for (wide, tiled, x_wide) in [
                (false, false, false),
                (false, false, true),
                (false, true, false),
                (false, true, true),
                (true, true, true),
            ] {
                let can = match wide {
                    true => unit.wide.is_some(),
                    false => (!tiled || unit.narrow_tiles) && (!x_wide || shared_wide),
                };
                if can {
                    let w = WeightsSource {
                        format,
                        wide,
                        tiled,
                    };
                    readings.push((Some(w), x_wide));
                }
            }
        }
        readings
    } else if shared_wide {
        vec![(None, false), (None, true)]
    } else {
        vec![(None, false)]
    };
    let mut out = Vec::new();
    for subgroups in [true, false] {
        for &(w, wide) in &readings {
            let name = format!(
                "{}{}{}{}",
                shader.name,
                w.map(|w| format!(".{}", w.format)).unwrap_or_default(),
                match w.map(|w| (w.wide, w.tiled, wide)) {
                    None | Some((true, ..)) if wide => ".wide",
                    Some((false, true, true)) => ".tiled.xwide",
                    Some((false, true, false)) => ".tiled",
                    Some((false, false, true)) => ".xwide",
                    _ => "",
                },
                if subgroups {
                    ".subgroups"
                } else {
                    ".workgroup"
                }
            );
            out.push((name, source::compose(shader, subgroups, w, wide)));
        }
    }
    out
}

fn parse(name: &str, src: &str) -> (naga::Module, naga::valid::ModuleInfo) {
    let module = naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{name}: WGSL parse error:\n{}", e.emit_to_string(src)));
    let info = Validator::new(ValidationFlags::all(), Capabilities::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: validation error:\n{}", e.emit_to_string(src)));
    (module, info)
}

#[test]
fn every_shader_validates_and_translates_to_all_backends() {
    let mut translated = 0;
    for shader in source::ALL {
        for (name, src) in variants(shader) {
            let (module, info) = parse(&name, &src);
            let subgroups = name.ends_with(".subgroups");
            for &entry in shader.entries {
                let constants = naga::back::PipelineConstants::default();
                let (module, info) = naga::back::pipeline_constants::process_overrides(
                    &module,
                    &info,
                    Some((naga::ShaderStage::Compute, entry)),
                    &constants,
                )
                .unwrap_or_else(|e| panic!("{name}/{entry}: overrides: {e}"));
                let stage = naga::ShaderStage::Compute;

                spv::write_vec(
                    &module,
                    &info,
                    &spv::Options::default(),
                    Some(&spv::PipelineOptions {
                        shader_stage: stage,
                        entry_point: entry.to_string(),
                    }),
                )
                .unwrap_or_else(|e| panic!("{name}/{entry}: SPIR-V: {e}"));

                let msl_options = msl::Options {
                    lang_version: (2, 4),
                    ..Default::default()
                };
                msl::write_string(
                    &module,
                    &info,
                    &msl_options,
                    &msl::PipelineOptions {
                        entry_point: Some((stage, entry.to_string())),
                        ..Default::default()
                    },
                )
                .unwrap_or_else(|e| panic!("{name}/{entry}: MSL: {e}"));

                let hlsl_options = hlsl::Options {
                    shader_model: hlsl::ShaderModel::V6_0,
                    ..Default::default()
                };
                let hlsl_pipeline = hlsl::PipelineOptions {
                    entry_point: Some((stage, entry.to_string())),
                };
                let mut out = String::new();
                hlsl::Writer::new(&mut out, &hlsl_options, &hlsl_pipeline)
                    .write(&module, &info, None)
                    .unwrap_or_else(|e| panic!("{name}/{entry}: HLSL: {e}"));

                // The wide twins read u64s (SHADER_INT64), which naga's GLSL backend does not
                // write and no GL adapter offers.
                if !name.contains(".wide.") && !name.contains(".xwide.") {
                    let glsl_options = glsl::Options {
                        version: if subgroups {
                            glsl::Version::Desktop(450)
                        } else {
                            glsl::Version::new_gles(310)
                        },
                        ..Default::default()
                    };
                    let mut out = String::new();
                    glsl::Writer::new(
                        &mut out,
                        &module,
                        &info,
                        &glsl_options,
                        &glsl::PipelineOptions {
                            shader_stage: stage,
                            entry_point: entry.to_string(),
                            multiview: None,
                        },
                        naga::proc::BoundsCheckPolicies::default(),
                    )
                    .and_then(|mut w| w.write())
                    .unwrap_or_else(|e| panic!("{name}/{entry}: GLSL: {e}"));
                }
                translated += 1;
            }
        }
    }
    // 17 shaders, 2 of them with two entry points (attention also reading its cache wide),
    // attention's rope entry as a shader of its own (also reading wide), 3 of them per weight
    // reading (14 formats, 5 of them also wide, 1 also tiled narrow), the narrow readings of 2
    // of them (matvec, matmul) also beside their wide shared helpers, each with and without
    // subgroups.
    assert_eq!(
        translated,
        2 * (14 + 2 * 2 + 2 + 3 * 20 + 2 * 15),
        "variant count changed"
    );
}

#[test]
fn params_structs_match_their_rust_mirrors() {
    for shader in source::ALL {
        let weights = shader
            .weights
            .then_some(source::WeightsSource::narrow(WeightFormat::F32));
        let src = source::compose(shader, false, weights, false);
        let (module, _) = parse(shader.name, &src);
        let (_, ty) = module
            .types
            .iter()
            .find(|(_, t)| t.name.as_deref() == Some("Params"))
            .unwrap_or_else(|| panic!("{}: no Params struct", shader.name));
        let naga::TypeInner::Struct { members, .. } = &ty.inner else {
            panic!("{}: Params is not a struct", shader.name);
        };
        let wgsl: Vec<(String, usize)> = members
            .iter()
            .map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize))
            .collect();
        let rust: Vec<(String, usize)> = shader
            .params
            .iter()
            .map(|(n, o)| (n.to_string(), *o))
            .collect();
        assert_eq!(wgsl, rust, "{}: WGSL Params vs Rust mirror", shader.name);
    }
}

/// The (name, access) of every `@binding(i)` global an entry point uses, in binding order;
/// `None` for the uniform at binding 0.
fn entry_bindings(
    module: &naga::Module,
    info: &naga::valid::ModuleInfo,
    entry: &str,
) -> Vec<(u32, String, Option<Access>)> {
    let index = module
        .entry_points
        .iter()
        .position(|e| e.name == entry)
        .unwrap_or_else(|| panic!("no entry point `{entry}`"));
    let used = info.get_entry_point(index);
    let mut out: Vec<(u32, String, Option<Access>)> = module
        .global_variables
        .iter()
        .filter(|(h, _)| !used[*h].is_empty())
        .filter_map(|(_, g)| {
            let binding = g.binding.as_ref()?;
            assert_eq!(binding.group, 0, "{entry}: bind group {}", binding.group);
            let access = match g.space {
                naga::AddressSpace::Uniform => None,
                naga::AddressSpace::Storage { access } => {
                    Some(if access.contains(naga::StorageAccess::STORE) {
                        Access::ReadWrite
                    } else {
                        Access::Read
                    })
                }
                other => panic!("{entry}: binding in address space {other:?}"),
            };
            Some((binding.binding, g.name.clone().unwrap_or_default(), access))
        })
        .collect();
    out.sort_by_key(|b| b.0);
    out
}

#[test]
fn bindings_match_their_rust_declarations() {
    for shader in source::ALL {
        for (name, src) in variants(shader) {
            let (module, info) = parse(&name, &src);
            // Every declared binding, used by an entry point or not.
            let declared: Vec<(u32, String)> = module
                .global_variables
                .iter()
                .filter_map(|(_, g)| Some((g.binding.as_ref()?.binding, g.name.clone()?)))
                .collect();
            assert_eq!(
                declared.len(),
                shader.bindings.len() + 1,
                "{name}: WGSL declares {declared:?}, Rust {:?}",
                shader.bindings
            );
            for &entry in shader.entries {
                let wgsl = entry_bindings(&module, &info, entry);
                for (binding, var, access) in &wgsl {
                    let what = format!("{name}/{entry} @binding({binding}) {var}");
                    if *binding == 0 {
                        assert_eq!(access, &None, "{what}: binding 0 is the Params uniform");
                        continue;
                    }
                    let (rust_name, rust_access) = shader
                        .bindings
                        .get(*binding as usize - 1)
                        .unwrap_or_else(|| panic!("{what}: not declared in Rust"));
                    assert_eq!(var, rust_name, "{what}: WGSL name vs Rust field");
                    assert_eq!(
                        access.as_ref(),
                        Some(rust_access),
                        "{what}: WGSL access vs Rust declaration"
                    );
                }
            }
            // Names and access of all declared globals, whichever entry uses them.
            for (i, (rust_name, rust_access)) in shader.bindings.iter().enumerate() {
                let (_, g) = module
                    .global_variables
                    .iter()
                    .find(|(_, g)| g.binding.as_ref().map(|b| b.binding) == Some(i as u32 + 1))
                    .unwrap_or_else(|| panic!("{name}: no @binding({})", i + 1));
                assert_eq!(
                    g.name.as_deref(),
                    Some(*rust_name),
                    "{name}: @binding({})",
                    i + 1
                );
                let naga::AddressSpace::Storage { access } = g.space else {
                    panic!("{name}: {rust_name} is not a storage buffer");
                };
                let read_write = access.contains(naga::StorageAccess::STORE);
                assert_eq!(
                    read_write,
                    *rust_access == Access::ReadWrite,
                    "{name}: {rust_name} access"
                );
            }
            let uniform = module
                .global_variables
                .iter()
                .find(|(_, g)| g.binding.as_ref().map(|b| b.binding) == Some(0))
                .map(|(_, g)| g.space);
            assert_eq!(
                uniform,
                Some(naga::AddressSpace::Uniform),
                "{name}: @binding(0) is the Params uniform"
            );
        }
    }
}
