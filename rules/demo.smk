# Stage 1: the embedded demo cohort, simulated offline (only when input_dir is not set).


rule generate_demo:
    output:
        participants=f"{DEMO_DIR}/participants.tsv",
    params:
        cfg=section_json("demo"),
    threads: all_cores
    log:
        "logs/generate_demo.log",
    benchmark:
        "results/benchmarks/generate_demo.tsv"
    shell:
        "python -m pipeline demo --params {params.cfg:q} --out $(dirname {output.participants:q})"
        " --workers {threads} > {log:q} 2>&1"
