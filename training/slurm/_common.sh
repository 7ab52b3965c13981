# What the train.emotion_*.slurm job scripts share; sourced by them, not run. A job script finds it
# beside itself (under Slurm through `scontrol show job`: the batch shell runs a copy in slurmd's spool).
#
#   slurm_submit LOG_NAME [SBATCH_OPTION...]  outside Slurm: submit the calling script ($0) and exit;
#                                             its log goes to $LOG_DIR/LOG_NAME        [LOG_DIR: $OUT_DIR/logs]
#   slurm_submit_gpus LOG_NAME                the same, with --ntasks and --gres from GPUS and NTASKS
#   slurm_add_run_args                        append the options every phase takes from the environment to `args`
#   slurm_add_model_args                      append IMAGE_SIZE and PRETRAINED (the phases that build a model)
#   slurm_train LABEL COMMAND...              run the trainer with EXTRA_ARGS appended, forward Slurm's warning
#                                             signal to it, requeue the job when it saved its state (exit 75),
#                                             and exit with its exit code
#   slurm_ddp_launch                          set `launch`: srun (one process per task) when the job has > 1 task
#
# Environment read here: OUT_DIR, LOG_DIR, CPUS_PER_TASK, ACCOUNT, PARTITION, TIME, QOS, GPUS, NTASKS,
# CONFIG, EPOCHS, BATCH_SIZE, WORKERS, LIMIT_TRAIN_IMAGES, MAX_STEPS_PER_EPOCH, IMAGE_SIZE, PRETRAINED, EXTRA_ARGS.

slurm_submit() {
    local log_name="$1"
    shift
    local log_dir="${LOG_DIR:-$OUT_DIR/logs}"
    mkdir -p "$log_dir"
    local submit=(sbatch --parsable --output="$log_dir/$log_name" --cpus-per-task="${CPUS_PER_TASK:-8}" "$@")
    [[ -n "${ACCOUNT:-}" ]] && submit+=(--account="$ACCOUNT")
    [[ -n "${PARTITION:-}" ]] && submit+=(--partition="$PARTITION")
    [[ -n "${TIME:-}" ]] && submit+=(--time="$TIME")
    [[ -n "${QOS:-}" ]] && submit+=(--qos="$QOS")
    exec "${submit[@]}" "$0"
}

slurm_submit_gpus() {
    local gpus="${GPUS:-1}"
    local ntasks="${NTASKS:-$(( gpus > 1 ? gpus : 1 ))}"
    local gres="gpu:$gpus"
    [[ "$gpus" == "0" ]] && gres=none
    slurm_submit "$1" --ntasks="$ntasks" --gres="$gres"
}

slurm_add_run_args() {
    [[ -n "${CONFIG:-}" ]] && args+=(--config "$CONFIG")
    [[ -n "${EPOCHS:-}" ]] && args+=(--epochs "$EPOCHS")
    [[ -n "${BATCH_SIZE:-}" ]] && args+=(--batch-size "$BATCH_SIZE")
    [[ -n "${WORKERS:-}" ]] && args+=(--workers "$WORKERS")
    [[ -n "${LIMIT_TRAIN_IMAGES:-}" ]] && args+=(--limit-train-images "$LIMIT_TRAIN_IMAGES")
    [[ -n "${MAX_STEPS_PER_EPOCH:-}" ]] && args+=(--max-steps-per-epoch "$MAX_STEPS_PER_EPOCH")
    return 0
}

slurm_add_model_args() {
    [[ -n "${IMAGE_SIZE:-}" ]] && args+=(--image-size "$IMAGE_SIZE")
    case "${PRETRAINED:-}" in
        true|1|yes) args+=(--pretrained) ;;
        false|0|no) args+=(--no-pretrained) ;;
    esac
    return 0
}

slurm_ddp_launch() {
    launch=()
    if [[ "${SLURM_NTASKS:-1}" -gt 1 ]]; then
        # DDP: srun starts one process per task; rank/world size come from SLURM_PROCID/SLURM_STEP_NUM_TASKS.
        MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
        export MASTER_ADDR
        export MASTER_PORT="$(( 20000 + SLURM_JOB_ID % 20000 ))"
        launch=(srun --kill-on-bad-exit=1)
    fi
}

slurm_train() {
    local label="$1"
    shift
    local extra
    read -r -a extra <<< "${EXTRA_ARGS:-}"
    echo "[$(date -Is)] $label on $(hostname), ${SLURM_NTASKS:-1} task(s): $* ${extra[*]}"
    # In the background, so that this shell can forward Slurm's warning signal (it reaches the batch shell only).
    "$@" "${extra[@]}" &
    slurm_trainer_pid=$!
    trap 'echo "[$(date -Is)] signal received: asking the trainer to checkpoint"; kill -USR1 "$slurm_trainer_pid" 2>/dev/null' USR1 TERM
    local rc=0
    wait "$slurm_trainer_pid" || rc=$?
    while kill -0 "$slurm_trainer_pid" 2>/dev/null; do  # wait was interrupted by the trap: wait for the real exit
        rc=0
        wait "$slurm_trainer_pid" || rc=$?
    done
    if [[ "$rc" -eq 75 ]]; then
        echo "[$(date -Is)] trainer saved its state (exit 75): requeueing job $SLURM_JOB_ID"
        scontrol requeue "$SLURM_JOB_ID"
    fi
    echo "[$(date -Is)] $label finished with exit code $rc"
    exit "$rc"
}
