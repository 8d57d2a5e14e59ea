"""Training data: the preprocessed volumes of a split (`volumes`), the on-disk cache the samplers read crops from
(`cache`), and the samplers, whose batch of step ``k`` is a pure function of ``(seed, k)`` (`sr_sampler`,
`unpaired_sampler`). The GAN families build their samplers from these; nothing here knows a family.
"""
