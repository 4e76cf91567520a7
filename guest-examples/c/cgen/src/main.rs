//! `cgen WIT-DIR WORLD OUT-DIR`: writes wit-bindgen's C bindings for WORLD
//! (`<world>.h`, `<world>.c`, `<world>_component_type.o`) into OUT-DIR.
use wit_bindgen_core::{Files, WorldGenerator, wit_parser::Resolve};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, wit, world, out] = args.as_slice() else {
        anyhow::bail!("usage: cgen WIT-DIR WORLD OUT-DIR");
    };
    let out = std::path::Path::new(out);
    let mut resolve = Resolve::default();
    let (pkg, _) = resolve.push_path(wit)?;
    let world = resolve.select_world(&[pkg], Some(world))?;
    let mut generator: Box<dyn WorldGenerator> = wit_bindgen_c::Opts::default().build();
    let mut files = Files::default();
    generator.generate(&mut resolve, world, &mut files)?;
    std::fs::create_dir_all(out)?;
    for (name, bytes) in files.iter() {
        std::fs::write(out.join(name), bytes)?;
        println!("wrote {}", out.join(name).display());
    }
    Ok(())
}
