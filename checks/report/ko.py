"""Korean text of the report: headings and each audit's title, problem, fix and remediation.

Measured evidence stays as the audits wrote it (numbers, names, code locations).
"""

HEADINGS = {
    "title": "Verification Report (검증 보고서)",
    "intro": "이 보고서의 모든 상태는 코드를 읽은 결과가 아니라 모델을 실제로 실행해 측정한 결과입니다.",
    "target": "대상", "weights": "가중치", "devices": "장치", "command": "명령", "versions": "버전",
    "generated": "생성 시각", "duration": "소요 시간",
    "summary": "요약",
    "summary_head": "| # | 감사 | 상태 | 결과 |",
    "sections": "감사 항목별 상세",
    "problem": "문제", "fix": "검증하는 해결책", "location": "위치", "status": "상태",
    "evidence": "측정 근거", "metrics": "측정값", "remediation": "실패 시 조치",
    "comparison": "풀링별 비교", "heatmap": "유사도 히트맵",
    "trace": "상세 추적 경로 (이번 실행에서 관찰됨)",
    "checklist": "종합 체크리스트",
    "table_head": "| # | 문제 | 해결책 | 위치 | 상태 |",
    "conclusion": "결론",
    "safe": "✅ 학습해도 안전합니다: 실패(FAIL/ERROR)한 감사가 없고, 핵심 장치·텍스트 감사가 실행되었습니다.",
    "unproven": "⏸️ 안전하다고 확인되지 않았습니다: 실패한 감사는 없지만 {n}개 중 {skipped}개의 감사가 건너뛰어졌고 "
                "핵심 감사 {missing}이(가) 실행되지 않았습니다. 각 SKIP이 요구하는 것을 대상에 제공하고 다시 실행하십시오.",
    "skipped": "⏭️ 건너뛴 감사 {n}개 (각 항목의 사유 참조).",
    "unsafe": "❌ 아직 학습하지 마십시오: {n}개의 감사가 실패했습니다. 각 항목의 '실패 시 조치'를 따르십시오.",
    "warned": "⚠️ 경고 {n}개: 정확성에는 문제가 없지만 속도 또는 분리도에 영향을 줍니다.",
    "train_with": "다음 명령으로 학습하십시오:",
    "random_note": " (무작위 CLIP 가중치: 수치는 학습된 CLIP이 아니라 이 무작위 모델을 설명합니다)",
    "devices_line": "모든 감사는 cpu에서 실행; buffer-device-sync, index-device-consistency, host-sync는 "
                    "{dev}를 외부 장치로 사용",
    "no_cuda": " (이 머신에는 CUDA가 없음: meta 장치는 데이터를 갖지 않으므로 순전파의 호스트 읽기나 CPU 텐서가 "
               "모두 드러남)",
    "constructed": "생성",
    "moved": "이동",
    "forward": "순전파",
    "no_trace": "(장치 추적 없음: index-device-consistency가 실행되지 않았습니다)",
    "full_report": "모든 감사의 측정 근거가 담긴 전체 보고서",
}

AUDITS = {
    "buffer-device-sync": (
        "버퍼가 model.to(device)를 따라감",
        "tokenized_prompts(CoOp 원본은 일반 속성)가 model.to(device) 이후에도 CPU에 남아, 텍스트 인코더가 "
        "CPU 인덱스로 장치 텐서를 인덱싱함",
        "옮긴 사본의 순전파가 읽는 모델의 모든 텐서(이름과 무관: 파라미터, 버퍼, 남겨진 일반 텐서 속성 없음)가 "
        "장치에 있음",
        "forward가 읽는 모든 텐서를 self.name = tensor 대신 self.register_buffer(name, tensor)로 등록하고, "
        "tensor.to(device)의 결과를 버리지 말고 보관하십시오(텐서 자체는 옮겨지지 않음)",
    ),
    "index-device-consistency": (
        "순전파의 모든 텐서가 모델 장치에 있음",
        "EOT 인덱스(또는 다른 인덱스 텐서)가 CPU에서 만들어지고 은닉 상태는 GPU에 있음: 장치 불일치 오류 "
        "또는 매 스텝의 숨은 복사·동기화",
        "인덱스는 모델 장치의 버퍼인 tokenized_prompts에서 나오며, 순전파에서 CPU로 옮기는 텐서가 없음",
        "인덱스 텐서는 버퍼(tokenized_prompts.argmax(-1))에서 또는 device=x.device로 만들고, 순전파에서 "
        ".cpu()/.to('cpu')를 제거하십시오",
    ),
    "eot-collapse": (
        "클래스 텍스트 특징이 구별됨",
        "모든 클래스가 (거의) 같은 텍스트 특징을 가져 로짓이 클래스를 구분하지 못함 (시드 보고서의 'EOT collapse')",
        "설정된 풀링이 CLIP이 클래스 이름을 구별하는 만큼 클래스를 구별함",
        "FAIL: text-encoder-parity, causal-mask, batch-independence가 흔한 원인(남은 permute, 빠진 마스크, "
        "잘못된 EOT 인덱스)을 알려줍니다. WARN: 풀링이 CLIP의 분산을 좁힙니다. 표의 다른 풀링과 비교하십시오 (--text-pool)",
    ),
    "dataset-unpacking": (
        "데이터셋 항목이 (features, label, meta)로 언팩됨",
        "트레이너는 `features, labels, _ = batch`로 언팩하는데 데이터셋이 다른 형태(필드 2개, 1부터 시작하는 "
        "라벨, [D, T] 특징)를 반환: 충돌 또는 조용히 틀린 라벨",
        "항목과 DataLoader 배치가 (features [T, D] float, label ∈ [0, n_cls), meta dict)이며, 한 배치가 "
        "train_one_epoch와 validate를 통과함",
        "__getitem__에서 0부터 시작하는 라벨과 모델 임베딩 차원의 [T, D] 특징으로 VideoSample(features, label, meta)를 반환하십시오",
    ),
    "text-encoder-parity": (
        "텍스트 인코더 = CLIP의 encode_text",
        "CLIP 자체 텍스트 경로와 다른 CoOp TextEncoder 포트(남은 permute, 잃어버린 인과 마스크, 다른 풀링 위치나 "
        "투영)는 CLIP이 만든 적 없는 특징을 냄",
        "컨텍스트를 템플릿의 토큰 임베딩으로 채우면 텍스트 인코더가 같은 토큰 id의 clip_model.encode_text와 같음",
        "텍스트 인코더가 encode_text의 모듈을 그대로 실행하게 하십시오: 위치 임베딩, clip_model.attn_mask를 쓴 "
        "트랜스포머(open_clip 3.x는 batch-first, permute 없음), ln_final, EOT 토큰, text_projection",
    ),
    "causal-mask": (
        "EOT 뒤의 위치는 풀링 결과를 바꾸지 않음",
        "CLIP의 인과 마스크가 없으면(shape 오류를 없애려고 제거) EOT가 뒤따르는 패딩을 보게 되고, 모든 클래스에 "
        "같은 패딩이 클래스 토큰을 압도함",
        "트랜스포머가 clip_model.attn_mask로 실행되어 EOT 뒤의 위치가 EOT에 닿지 못함 (MobileCLIP처럼 인과 마스크 "
        "없이 만들어진 텍스트 타워는 대신 전체 컨텍스트 길이에서 encode_text와 같아야 함)",
        "transformer에 attn_mask=clip_model.attn_mask(프롬프트 길이로 잘라서)를 전달하고, 마지막 위치가 아니라 "
        "EOT(또는 EOT 이하 위치의 평균)에서 풀링하십시오. 인과 마스크가 없는 타워에서는 자르지 말고 전체 컨텍스트 "
        "길이로 실행하십시오",
    ),
    "batch-independence": (
        "각 클래스가 독립적으로 인코딩됨",
        "open_clip의 batch-first 트랜스포머에 CoOp의 permute(1, 0, 2)를 남기면 클래스가 어텐션 시퀀스가 되어 "
        "모든 클래스 특징이 다른 클래스와 섞임",
        "클래스가 배치 차원이며, 한 클래스는 혼자 인코딩하든 다른 클래스와 함께 인코딩하든 같음",
        "트랜스포머 주변의 permute(1, 0, 2) 쌍을 제거하고(open_clip >= 2.26은 batch-first) 인과 마스크를 전달하십시오",
    ),
    "gradient-flow": (
        "그래디언트가 학습 대상에 도달하고 CLIP은 고정됨",
        "컨텍스트가 그래디언트를 받지 못하거나(detach, no_grad 텍스트 경로), CLIP 가중치가 학습 가능하게 남아 "
        "변하거나, 옵티마이저가 학습 가능한 집합과 다른 텐서를 가짐",
        "옵티마이저 한 스텝 후 모든 학습 텐서가 유한하고 0이 아닌 그래디언트를 받아 변했고, 깨끗한 CLIP의 모든 "
        "텐서(이름과 값으로 대조)는 대상이 학습한다고 선언하지 않는 한(trainable_clip) 그래디언트가 없고 비트 단위로 "
        "같으며, 고정된 파라미터는 변하지 않았고, 옵티마이저가 학습 가능한 집합을 가짐",
        "clip_model.requires_grad_(False)로 CLIP을 고정하고, [p for p in model.parameters() if p.requires_grad]로 "
        "옵티마이저를 만들며, 학습 중 프롬프트를 detach하거나 텍스트 인코더를 torch.no_grad()로 감싸지 마십시오. "
        "CLIP 텐서를 의도적으로 학습한다면(미세 조정) AuditTarget(trainable_clip=['text_encoder.*'])로 선언하십시오",
    ),
    "prompt-tokenization": (
        "프롬프트가 맞게 들어가고, 클래스가 레이아웃 위치에 있으며 EOT에서 풀링됨",
        "컨텍스트 길이보다 긴 프롬프트가 조용히 잘리거나(클래스 이름 토큰 손실, EOT가 마지막 칸으로 강제), "
        "풀링 인덱스가 이 토크나이저의 EOT가 아님",
        "모든 클래스의 단어가 설정된 위치에 온전히 있고, 프롬프트마다 EOT가 하나이며, argmax 방식 풀링이 그 EOT를 읽음",
        "컨텍스트 토큰 수나 표시 이름을 줄이십시오. EOT가 가장 큰 id가 아닌 토크나이저는 (tokens == eot_id).argmax(-1)에서 풀링하십시오",
    ),
    "host-sync": (
        "순전파에 호스트-장치 동기화 없음",
        "클래스별 .item() 루프(시드의 mean pooling)나 .cpu()/.tolist()가 스텝마다 클래스 수만큼 GPU를 멈춤: "
        "정확하지만 느림",
        "풀링이 장치 위의 인덱스로 클래스에 대해 벡터화됨",
        ".item() 값에 대한 파이썬 루프를 텐서 연산(gather, EOT 이하 위치 마스크)으로 바꾸고 인덱스 텐서를 장치에 두십시오",
    ),
    "checkpoint-roundtrip": (
        "저장 후 다시 불러온 상태가 같은 로짓을 냄",
        "학습된 텐서를 빠뜨린 체크포인트(또는 키를 조용히 건너뛰는 로드)가 다른 모델을 복원함: CoOp 포트에서 "
        "보고되는 '다시 불러오면 정확도 1%'",
        "파일에 저장하고 새 모델에 strict로 불러온 학습 상태가 동일한 로짓을 냄",
        "모든 학습 텐서를 저장하고(model.trainable_state_dict()) strict=True로 불러오며, prefix/suffix 버퍼는 "
        "체크포인트가 아니라 클래스 이름에서 만드십시오",
    ),
    "feature-model-match": (
        "특징이 모델과 같은 CLIP에서 나옴",
        "한 CLIP(구조 또는 가중치)으로 추출한 프레임 특징과 다른 CLIP으로 학습한 프롬프트: 두 임베딩 공간이 "
        "맞지 않아 학습은 돌지만 쓸모 있는 것을 배우지 못함",
        "각 특징 폴더의 features.json이 모델의 CLIP 구조와 가중치를 가리키고, 차원이 모델의 임베딩 차원과 같음",
        "특징을 추출한 --clip-model/--pretrained/--clip-checkpoint로 학습하거나(features.json 참고) 특징을 다시 추출하십시오",
    ),
    "temporal-padding": (
        "마스크와 함께 덧붙인 0 프레임이 로짓을 바꾸지 않음",
        "길이가 다른 비디오는 배치 안에서 가장 긴 것에 맞춰 0으로 채워짐: 모든 프레임에 대한 시간 평균(마스크 무시 또는 "
        "마스크 없음)이나 패딩을 포함한 max는 패딩된 비디오에 다른 로짓을 줌: 로짓이 배치 동료의 길이에 좌우됨",
        "모든 비디오에 0 프레임을 덧붙이고 마스크로 표시해도(videocoop.data.collate_samples처럼) 각 비디오의 로짓이 그대로임",
        "forward(features, mask)로 마스크를 받아 실제 프레임만 집계하십시오: 마스크 평균(프레임 x 마스크의 합 / 실제 "
        "프레임 수), max 전 masked_fill(-inf), 시간 트랜스포머에는 src_key_padding_mask=~mask",
    ),
    "video-batch-independence": (
        "각 비디오가 배치와 무관하게 점수화됨",
        "배치 축 평균, 평가 중의 배치 통계, 배치 전체에 걸친 시간 모듈 어텐션(batch_first 누락), 각 비디오가 아닌 배치에 "
        "조건화된 프롬프트가 비디오를 섞음: 한 비디오의 로짓이 배치 동료에 따라 바뀌고, 다른 배치 크기로 평가하면 다른 "
        "수치가 나옴",
        "매 순전파마다 텍스트 쪽까지 다시 계산한 각 비디오의 로짓이 혼자, 배치의 절반, 배치 전체에서(eval 모드) 그리고 "
        "학습 모드의 절반과 전체 배치에서 같음(학습 모드의 BatchNorm 배치 통계는 설계이므로 WARN)",
        "프레임 축(dim 1)으로만 줄이고 배치 축(dim 0)으로는 줄이지 마십시오. 프롬프트는 배치가 아닌 각 비디오에 "
        "조건화하고, BatchNorm은 평가용 running 통계를 유지하며(track_running_stats=True), [B, T, D]용 시간 "
        "트랜스포머는 batch_first=True로 만드십시오",
    ),
    "class-order": (
        "프롬프트, 분할, 체크포인트의 클래스 순서가 일치함",
        "레이블 i는 모든 목록이 일치할 때만 프롬프트의 클래스 i를 뜻함: 한 클래스가 빠졌거나 폴더를 다르게 정렬한 검증 "
        "폴더는 레이블을 하나씩 밀고, 다른 클래스 목록으로 학습한 체크포인트는 오류 없이 로드되어 엉뚱한 클래스로 정확도를 잼",
        "프롬프트의 클래스 목록, 학습·검증 분할의 목록(각 항목을 읽은 클래스 폴더 포함), 체크포인트에 저장된 클래스 "
        "목록이 하나의 목록, 하나의 순서임",
        "검증 데이터셋은 학습 분할의 클래스 목록으로 만들고(FeatureDataset(val_dir, classnames=train_set.classnames)) "
        "각 폴더에 classnames.txt를 두십시오. 저장된 classnames가 데이터와 같은 체크포인트만 재개·평가하십시오",
    ),
    "logit-scale": (
        "로짓 = exp(logit_scale) x 코사인",
        "정규화하지 않은 특징(로짓이 노름에 따라 커짐), 두 번 적용한 exp(inf) 또는 빠진 exp(온도 100 대신 4.6), 실수로 "
        "학습되는 CLIP의 logit_scale",
        "모든 로짓이 exp(logit_scale) x L2 정규화된 비디오·텍스트 특징의 코사인과 같음: 행은 exp(logit_scale)로 "
        "제한되고, exp는 한 번만, 모델이 학습한다고 밝히지 않는 한 스케일은 고정",
        "곱하기 전에 두 특징을 정규화하고(F.normalize(x, dim=-1)), 저장된 로그 스케일(CLIP은 log(100)을 저장)에서 "
        "forward 안에서 한 번만 logit_scale.exp()를 계산하며, logit_scale은 고정(버퍼 또는 requires_grad_(False))하거나 "
        "model.trains_logit_scale = True로 밝히십시오",
    ),
    "optimizer-step": (
        "실제 옵티마이저 몇 스텝 후에도 모든 학습 텐서가 유한하고, 반올림으로 사라지는 업데이트가 없음",
        "CoOp은 fp16(CLIP과 컨텍스트가 반정밀도)으로 학습하고 사용자는 SGD를 Adam/AdamW로 바꿈: Adam의 eps(1e-8)는 "
        "fp16에서 0이고 작은 그래디언트의 제곱은 언더플로하여 첫 스텝에 컨텍스트가 inf, 다음에 NaN이 됨. "
        "gradient-flow의 SGD 한 스텝으로는 드러나지 않음. fp16 가중치를 optimizer.step() 때만 fp32로 바꿨다가 되돌리는 "
        "루프는 fp32 마스터 가중치가 없어, 작은 학습률의 업데이트 대부분이 원래 fp16 값으로 반올림됨",
        "실행이 실제로 쓰는 옵티마이저(학습 플래그의 것 또는 대상의 팩토리)로, 대상이 선언한 학습 스텝이 있으면 그것(정밀도 "
        "처리 포함)으로, 모델 자체 정밀도에서 복사본에 몇 스텝: 손실과 모든 학습 텐서가 유한함. 첫 스텝에서 반올림으로 "
        "잃은 업데이트의 비율을 같은 그래디언트의 fp32 스텝과 비교해 측정하며, fp32 마스터 가중치가 있으면 0임. 스텝이 "
        "텐서를 움직임(학습률 0은 아무것도 바꾸지 않음)",
        "학습 텐서는 fp32로 두십시오(fp32 마스터 가중치: 컨텍스트는 fp32, CLIP은 반정밀도, --precision fp16처럼). 또는 "
        "GradScaler와 함께 amp를 쓰십시오. 반정밀도 Adam이라면 더 큰 eps(1e-4)로 최소한 0으로 나누기는 피할 수 있습니다. "
        "스텝 뒤에 가중치를 fp16으로 되돌리지 마십시오",
    ),
    "extraction-parity": (
        "저장된 특징이 원본 프레임에 대한 CLIP 자체의 특징과 같음",
        "추출기가 CLIP 자체 파이프라인과 다르게 특징을 만듦: BGR로 읽은 프레임(OpenCV 기본값), CLIP 대신 ImageNet "
        "mean/std, 리사이즈+중앙 크롭 대신 늘린 리사이즈, 다른 타워의 가중치, 기록과 다른 시점의 프레임. 학습은 "
        "어떤 CLIP 사용자도 계산하지 않을 특징에 맞춰 프롬프트를 배움",
        "원본 영상에 접근할 수 있는 일부 영상에 대해, 기록된 프레임을 독립적으로(모든 프레임을 순서대로, PyAV) 디코딩하고 "
        "open_clip의 PIL 전처리와 encode_image(fp32)를 실행해, 저장된 특징과 프레임마다 상대 오차로 비교함",
        "`videocoop extract`로 다시 추출하십시오(CLIP 자체 전처리, RGB, 모델의 타워). 직접 만든 코드로 추출한다면 "
        "프레임 하나에 대해 open_clip의 preprocess와 비교하십시오",
    ),
    "determinism": (
        "같은 시드는 같은 수치를 줌",
        "같은 시드로 재현되지 않는 실행(평가 중 켜진 dropout, training=True가 기본값인 F.dropout, 시드로 고정되지 않는 "
        "노이즈, 검증 데이터의 무작위 시간 크롭): 기계 차이와 버그를 구분할 수 없고, 두 순전파를 비교하는 모든 감사"
        "(체크포인트 왕복, 패딩, 배치 독립성)가 그 이유만으로 달라짐",
        "같은 비디오의 eval 순전파 두 번이 같은 로짓을 주고, 검증 항목을 두 번 읽어도 같으며, 같은 시드(torch, numpy, "
        "Python)로 한 두 번의 짧은 학습이 CPU에서 비트 단위로 같은 학습 텐서를 줌(CUDA에서는 fp32 반올림 이내). 버전과 "
        "결정성 플래그를 기록함",
        "F.dropout에는 training=self.training을 넘기거나 nn.Dropout을 쓰고, 노이즈는 학습 중에만 torch의 시드된 생성기로 "
        "뽑으며, 검증 프레임은 결정적으로(구간 중앙) 샘플링하십시오. CUDA에서는 " + "torch.use_deterministic_algorithms("
        "True), CUBLAS_WORKSPACE_CONFIG=:4096:8, torch.backends.cudnn.deterministic = True, "
        "torch.backends.cudnn.benchmark = False를 설정하십시오",
    ),
    "learning-signal": (
        "손실이 우연 수준에서 시작하고, 비디오를 읽으며, 내려감",
        "진행되지 않는 학습: 우연 수준보다 훨씬 높게 시작하는 손실(손실에서 logit_scale을 한 번 더 적용), 비디오를 "
        "무시하는 로짓(손실이 우연 수준에 머묾), 로짓 대신 확률(forward 안의 softmax 뒤에 cross-entropy가 다시 softmax), "
        "배치 합으로 계산한 손실, 학습률을 0에 묶어 두는 스케줄",
        "초기 손실이 log(클래스 수)와 같은 클래스의 제로샷 손실 근처이고, 손실이 로짓에 보내는 그래디언트가 배치 평균 "
        "cross-entropy의 것과 같으며, 서로 다른 비디오가 서로 다른 로짓(확률이 아닌)을 받고, 실행 자체의 옵티마이저와 "
        "스케줄로 한 배치에 몇 스텝(스케줄의 가장 높은 학습률에서) 학습하면 손실이 내려감",
        "exp(logit_scale)은 한 번만(모델 또는 손실 중 한 곳) 적용하고, forward는 로짓을 반환하며(softmax 없이: "
        "cross-entropy가 적용함), 손실은 배치 평균으로, forward에서 비디오 특징을 읽고, 스케줄은 워밍업 뒤 0보다 큰 "
        "학습률을 주십시오",
    ),
    "split-integrity": (
        "분할이 말하는 그대로임",
        "새거나 주장과 다른 분할: 학습과 검증 분할 모두에 있는 비디오(복사, 두 번 나열, 재추출), 이름이 같은 두 클래스"
        "('brush_hair'와 'brush hair'), 비디오가 없는 클래스, 비디오보다 목록의 클래스가 많은 분할(220 대신 221), "
        "겹치는 base와 novel 클래스, 클래스당 K개가 아닌 K-shot 추출: 수치가 다른 것을 잼",
        "모든 검증 비디오가 모든 학습 비디오와 다름(원본 파일, 내용 해시, 특징: 측정한 선 아래의 코사인, 청크 단위로 "
        "비교). '_'를 공백으로 읽어도 클래스 이름이 유일함. 나열된 모든 클래스가 모든 분할에 비디오를 가짐(클래스별 "
        "개수 표시). base와 novel이 서로소. 클래스당 정확히 K개",
        "원본 비디오 단위로 분할하고(분할마다 목록 하나, 두 분할에 같은 파일 없음), 클래스 목록의 중복을 없애며, "
        "비디오가 없는 클래스는 목록에서 빼거나 비디오를 더하고, few-shot 분할은 클래스별로 추출하십시오(videocoop의 "
        "--shots가 시드로 해 줌)",
    ),
    "distributed-equivalence": (
        "프로세스 2개가 하나처럼 학습함",
        "GPU 여러 개가 하나와 다른 수치를 줌: autograd 없는 all_gather(손실이 더 내려가지 않음), world size로 스케일된 "
        "손실, 빠진 all-reduce(프로세스마다 자기 모델을 학습), 프로세스마다 복사본 하나씩으로 모인 스칼라"
        "(DataParallel의 logit_scale)",
        "대상의 분산 스텝을 CPU의 gloo 프로세스 2개에서 전역 배치의 각자 몫으로 실행하고, 같은 배치의 프로세스 하나와 "
        "비교: 각 스텝 뒤의 그래디언트와 그 뒤의 학습 텐서가 모든 프로세스에서 fp32 반올림 이내로 같음",
        "학습 모듈을 DistributedDataParallel로 감싸고, 각 프로세스의 합산 손실을 world size / 전역 배치로 스케일하며"
        "(DDP가 평균함), 특징은 torch.distributed.nn.functional.all_gather(그래디언트를 전달함)로 모으고, logit scale 같은 "
        "스칼라는 gather에 넣지 마십시오",
    ),
    "checkpoint-strictness": (
        "체크포인트가 모든 학습 텐서를 담고 엄격하게 로드됨",
        "strict=False로 로드한 체크포인트(CoOp 자체 로더)는 예상하지 않은 키를 조용히 버림: DataParallel/DDP('module.'), "
        "torch.compile('_orig_mod.'), 래퍼('model.')에서 저장했거나 학습 텐서가 빠진 파일도 오류 없이 로드되고, 실행은 "
        "초기 프롬프트를 평가함",
        "실행이나 대상이 지정한 체크포인트를 읽어 텐서 키를 학습 텐서 이름과 비교하고(빠진 키, 예상하지 않은 키, 래퍼의 "
        "접두사, 모양), 실행 자체의 저장과 로드(선언된 경우 대상의 로더)가 새 모델의 모든 학습 텐서를 복원함",
        "래핑하지 않은 모델의 학습 텐서를 저장하고(래핑된 경우 model.module), strict=True로 로드하거나 load_state_dict의 "
        "missing_keys와 unexpected_keys를 확인하며, 예전 파일을 로드할 때는 래퍼의 접두사를 제거하십시오",
    ),
    "forward-state": (
        "순전파가 다음 순전파를 망가뜨리는 것을 남기지 않음",
        "첫 순전파가 만든 상태가 다음 순전파에 맞지 않음: 일반 속성으로 둔 텍스트 특징 캐시는 모델을 옮겨도 CPU에 "
        "남고(.to()는 파라미터와 버퍼만 옮김), 순전파 안의 self.eval() ... self.train()은 호출자가 eval 모드로 둔 "
        "모델을 다음 순전파부터 학습 모드로 만듦(dropout 켜짐, 배치 통계 사용)",
        "모델 자체 장치에서 한 번 순전파한 뒤, 외부 장치로 옮긴 사본의 순전파가 첫 순전파가 CPU에 만든 텐서를 읽지 "
        "않음. eval과 학습 모드 모두에서 순전파 전후로 모든 모듈의 train/eval 플래그가 같음",
        "캐시는 버퍼로 두고(self.register_buffer('text_cache', t, persistent=False)) 클래스 목록이 바뀌면 버리거나, "
        "다시 계산하십시오. forward 안에서 self.eval()/self.train()을 호출하지 말고, 고정된 부분은 torch.no_grad()로 "
        "실행하고 모드는 호출자에게 맡기십시오",
    ),
    "class-list-response": (
        "다른 클래스 목록을 주면 그 목록의 점수를 그 순서로 냄",
        "클래스 텍스트 특징을 (첫 순전파나 생성 시) 캐시하는 모델은 새 목록(base-to-novel, 다른 데이터셋, 부분집합)을 "
        "받아도 옛 클래스를 계속 채점함: 로짓이 옛 모양이나 옛 순서로 나오고 정확도가 엉뚱한 클래스에 대해 측정됨",
        "모든 클래스로 한 번 순전파한 뒤, 그 일부를 다른 순서로 준 모델이 부분집합의 클래스마다 한 열씩 그 순서로 점수를 "
        "내고(로짓이면 앞서의 같은 클래스 로짓과 같음), 그 부분집합을 뒤집어 주면 같은 점수가 뒤집혀 나옴",
        "클래스 목록이 바뀌면 클래스 텍스트를 다시 계산하십시오(또는 캐시를 목록에 묶고 목록이 바뀌면 버리십시오). "
        "__init__에서 한 번 계산한 클래스 특징을 계속 쓰지 마십시오",
    ),
    "temporal-operation": (
        "시간 헤드가 선언한 연산을 계산함",
        "이름과 다른 것을 계산하는 시간 모듈: [b, t, c]에 x.view(-1, c, t)를 쓰면 전치 대신 메모리를 재해석하여 1차원 "
        "'시간' 합성곱이 채널과 프레임을 섞음. 프레임 위치를 더하지 않은 시간 트랜스포머는 모델링해야 할 순서를 무시함",
        "한 프레임에 넣은 신호가 선언한 연산이 닿는 프레임에만 닿음(점별 헤드는 자기 자신, shift는 이웃, 폭 K 합성곱은 "
        "양쪽 K // 2, 어텐션은 모든 프레임). 프레임 순서를 바꾸면 순서 없는 헤드의 출력은 정확히 같은 순서로 바뀌고 "
        "순서 있는 헤드는 그렇지 않음. 헤드 자체 가중치와 학습 텐서를 무작위로 한 스텝 움직인 뒤 모두에서 확인",
        "프레임을 합성곱 레이아웃으로 옮길 때는 view/reshape가 아니라 x.transpose(1, 2)(또는 permute(0, 2, 1))를 "
        "쓰십시오. 어텐션 전에 학습된 프레임 위치를 더하십시오. 헤드가 계산하는 연산을 선언하십시오"
        "(AuditTarget(temporal_kind=...))",
    ),
    "temperature": (
        "학습과 평가가 같은 온도를 적용함",
        "한 모드에서 학습된 온도를 다른 모드가 쓰지 않음: 학습은 학습된 exp(logit_scale)로, 평가는 고정된 100(불러올 때 "
        "CLIP의 값)으로 코사인을 곱하면, logit_scale이 움직인 뒤에는 학습한 적 없는 온도로 평가됨",
        "학습과 평가 순전파가 하나의 온도를 적용함: 두 로짓이 배율 1로 일치하고, logit_scale을 옮기면 둘 다 움직이거나 "
        "둘 다 움직이지 않음. 고정된 평가 온도는 선언했을 때만 통과함",
        "두 모드에서 같은 텐서로 한 번 스케일을 계산하십시오(logit_scale.exp()). 평가가 다른 온도를 쓰는 것이 의도라면 "
        "선언하십시오: AuditTarget(eval_temperature=100.0)",
    ),
}
